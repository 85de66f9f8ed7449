//! Station registry files: wastewater outfalls under a QCVN 40:2011 column
//! B permit (COD ≤ 150 mg/L × Kq 0.9 × Kf 1.1; pH 5.5–9).

use std::path::PathBuf;

use crate::unique;

/// Wastewater outfalls to write as a registry file.
#[derive(Debug, Clone)]
pub struct Outfalls {
    ids: Vec<String>,
    parameters: Vec<&'static str>,
    expected_interval: Option<String>,
    extra: String,
}

const ALL: [&str; 4] = ["pH", "TSS", "COD", "NH4"];

impl Outfalls {
    /// `count` outfalls `<prefix>-0` … measuring pH, TSS, COD and NH4.
    pub fn numbered(prefix: &str, count: usize) -> Self {
        Outfalls {
            ids: (0..count).map(|i| format!("{prefix}-{i}")).collect(),
            parameters: ALL.to_vec(),
            expected_interval: None,
            extra: String::new(),
        }
    }

    /// One outfall named `id`.
    pub fn one(id: &str) -> Self {
        Outfalls {
            ids: vec![id.to_owned()],
            parameters: ALL.to_vec(),
            expected_interval: None,
            extra: String::new(),
        }
    }

    /// Measure only these of pH, TSS, COD, NH4.
    pub fn measuring(mut self, parameters: &[&'static str]) -> Self {
        self.parameters = ALL.into_iter().filter(|p| parameters.contains(p)).collect();
        self
    }

    /// Each parameter's expected reporting interval ("1h"), which sets when
    /// a silent parameter counts as a data gap.
    pub fn expected_interval(mut self, interval: &str) -> Self {
        self.expected_interval = Some(interval.to_owned());
        self
    }

    /// More `key = value` lines for every station (camera_url, contacts).
    pub fn with_lines(mut self, lines: &str) -> Self {
        self.extra.push_str(lines);
        self.extra.push('\n');
        self
    }

    /// The registry as TOML.
    pub fn toml(&self) -> String {
        let interval = self
            .expected_interval
            .as_deref()
            .map(|i| format!(", expected_interval = \"{i}\""))
            .unwrap_or_default();
        let parameters: String = self
            .parameters
            .iter()
            .map(|p| {
                let (unit, max) = match *p {
                    "pH" => ("pH", 14),
                    "NH4" => ("mg/L", 100),
                    _ => ("mg/L", 1000),
                };
                format!(
                    "  {{ code = \"{p}\", unit = \"{unit}\", range_min = 0, range_max = {max}{interval} }},\n"
                )
            })
            .collect();
        let mut limits = String::new();
        if self.parameters.contains(&"COD") {
            limits.push_str("  { parameter = \"COD\", max = 150, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", coefficients = { Kq = 0.9, Kf = 1.1 }, effective_from = 2012-01-01 },\n");
        }
        if self.parameters.contains(&"pH") {
            limits.push_str("  { parameter = \"pH\", min = 5.5, max = 9, regulation = \"QCVN 40:2011/BTNMT\", column = \"B\", effective_from = 2012-01-01 },\n");
        }
        let extra = &self.extra;
        let mut text = String::new();
        for (i, id) in self.ids.iter().enumerate() {
            text.push_str(&format!(
                r#"
[[stations]]
id = "{id}"
name = "Test outfall {i}"
facility = "Test facility"
industrial_zone = "KCN Hòa Hiệp"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "wastewater"
{extra}parameters = [
{parameters}]
limits = [
{limits}]
"#
            ));
        }
        text
    }

    /// Writes the registry to a new file in the temp directory.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = std::env::temp_dir().join(format!("{}.toml", unique("registry")));
        std::fs::write(&path, self.toml())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quantrac_proto::registry::Registry;

    #[test]
    fn fixtures_load_as_registries() {
        let r = Registry::from_toml(&Outfalls::numbered("T", 3).toml()).expect("4 parameters");
        assert_eq!(r.stations().count(), 3);
        let one = Outfalls::one("X")
            .measuring(&["COD"])
            .expected_interval("1h")
            .toml();
        let r = Registry::from_toml(&one).expect("COD only");
        let s = r.station("X").expect("station X");
        assert_eq!(s.parameters.len(), 1);
        assert_eq!(s.limits.len(), 1);
    }
}
