//! Tables the page exports, as CSV or XLSX: the same rows either way.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use rust_xlsxwriter::{Format, Workbook};

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    Empty,
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_owned())
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        if v.is_finite() {
            Cell::Number(v)
        } else {
            Cell::Empty
        }
    }
}

impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        v.map_or(Cell::Empty, Cell::from)
    }
}

/// A named table: a header row and rows of cells.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<Cell>>,
}

/// A CSV field, quoted when it must be; a text that a spreadsheet would
/// take for a formula is prefixed with `'`.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

impl Table {
    pub fn csv(&self) -> String {
        let mut out = self.headers.join(",");
        out.push('\n');
        for row in &self.rows {
            let fields: Vec<String> = row
                .iter()
                .map(|c| match c {
                    Cell::Text(t) => csv_field(t),
                    Cell::Number(v) => v.to_string(),
                    Cell::Empty => String::new(),
                })
                .collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// The table as one worksheet; text is written as text (never a
    /// formula), numbers as numbers.
    pub fn xlsx(&self) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        // Sheet names: at most 31 characters, none of []:*?/\.
        let name: String = self
            .name
            .chars()
            .filter(|c| !"[]:*?/\\".contains(*c))
            .take(31)
            .collect();
        if !name.is_empty() {
            sheet.set_name(name)?;
        }
        let bold = Format::new().set_bold();
        for (c, h) in self.headers.iter().enumerate() {
            sheet.write_string_with_format(0, col(c), *h, &bold)?;
        }
        for (r, row) in self.rows.iter().enumerate() {
            let r = u32::try_from(r + 1).unwrap_or(u32::MAX);
            for (c, cell) in row.iter().enumerate() {
                match cell {
                    Cell::Text(t) => {
                        sheet.write_string(r, col(c), t)?;
                    }
                    Cell::Number(v) => {
                        sheet.write_number(r, col(c), *v)?;
                    }
                    Cell::Empty => {}
                }
            }
        }
        sheet.set_freeze_panes(1, 0)?;
        sheet.autofit();
        book.save_to_buffer()
    }

    /// The download in `format` ("csv" or "xlsx"), named `<file>.<format>`.
    pub fn download(&self, format: &str, file: &str) -> Response {
        let file: String = file
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-_".contains(*c))
            .collect();
        let disposition = format!("attachment; filename=\"{file}.{format}\"");
        match format {
            "xlsx" => match self.xlsx() {
                Ok(bytes) => (
                    [
                        (
                            header::CONTENT_TYPE,
                            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
                                .to_owned(),
                        ),
                        (header::CONTENT_DISPOSITION, disposition),
                    ],
                    bytes,
                )
                    .into_response(),
                Err(e) => {
                    tracing::error!(error = %e, "xlsx export failed");
                    (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "the spreadsheet could not be written",
                    )
                        .into_response()
                }
            },
            _ => (
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                ],
                self.csv(),
            )
                .into_response(),
        }
    }
}

fn col(c: usize) -> u16 {
    u16::try_from(c).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        Table {
            name: "alerts [PY/HH]".into(),
            headers: vec!["station", "value", "note"],
            rows: vec![
                vec!["PY-1".into(), 12.5.into(), "=HYPERLINK(\"x\")".into()],
                vec!["PY-2".into(), f64::NAN.into(), "a,b".into()],
            ],
        }
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(
            table().csv(),
            "station,value,note\nPY-1,12.5,\"'=HYPERLINK(\"\"x\"\")\"\nPY-2,,\"a,b\"\n"
        );
        assert_eq!(csv_field("-12.5"), "-12.5");
    }

    #[test]
    fn xlsx_is_a_zip_with_the_sheet() {
        let bytes = table().xlsx().expect("xlsx");
        assert_eq!(&bytes[..2], b"PK", "an XLSX file is a ZIP archive");
        // The strings are stored in the shared-strings part, uncompressed
        // parts aside; the workbook names the sheet without the brackets.
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("xl/worksheets/sheet1.xml"));
    }
}
