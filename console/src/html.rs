//! HTML by hand: every dynamic text goes through [`esc`], and the layout
//! around each page. The assets (CSS, the small script for live updates)
//! are compiled into the binary.

use std::fmt::Write as _;

use crate::i18n::Lang;

pub const CSS: &str = include_str!("../assets/app.css");
pub const JS: &str = include_str!("../assets/app.js");

/// Text made safe for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string component.
pub fn url(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A measured value for people: whole numbers as such, otherwise 1 decimal
/// from 10 up and 2 below (a limit of 148.5 is never shown as 148).
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Who is looking (the header shows it).
#[derive(Debug, Clone)]
pub struct Viewer {
    pub identity: String,
    pub role: String,
}

impl Viewer {
    /// Officers and administrators act on alerts; analysts only look.
    pub fn can_act(&self) -> bool {
        self.role == "officer" || self.role == "admin"
    }
}

/// A whole page: header with navigation, the viewer and a language switch.
pub fn page(lang: Lang, viewer: Option<&Viewer>, active: &str, title: &str, body: &str) -> String {
    let mut s = String::with_capacity(body.len() + 2_048);
    let _ = write!(
        s,
        r#"<!doctype html><html lang="{code}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · {app}</title><link rel="stylesheet" href="/assets/app.css"></head><body><header><a class="brand" href="/alerts">{app}</a><nav>"#,
        code = lang.code(),
        title = esc(title),
        app = lang.t("title"),
    );
    if viewer.is_some() {
        for (href, key) in [
            ("/alerts", "alerts"),
            ("/stations", "stations"),
            ("/map", "map"),
        ] {
            let class = if key == active {
                " class=\"active\""
            } else {
                ""
            };
            let _ = write!(s, r#"<a href="{href}"{class}>{}</a>"#, lang.t(key));
        }
    }
    s.push_str("</nav><div class=\"who\">");
    let other = match lang {
        Lang::Vi => ("en", "English"),
        Lang::En => ("vi", "Tiếng Việt"),
    };
    let _ = write!(
        s,
        r#"<a href="/lang?to={}" id="lang">{}</a>"#,
        other.0, other.1
    );
    if let Some(v) = viewer {
        let _ = write!(
            s,
            r#" <span id="viewer" data-role="{role}">{name} ({role})</span><form method="post" action="/logout" class="inline"><button type="submit">{out}</button></form>"#,
            name = esc(&v.identity),
            role = esc(&v.role),
            out = lang.t("logout"),
        );
    }
    s.push_str("</div></header><main>");
    s.push_str(body);
    s.push_str("</main><script src=\"/assets/app.js\"></script></body></html>");
    s
}

/// A message box (errors, refusals, confirmations).
pub fn notice(kind: &str, text: &str) -> String {
    format!(r#"<p class="notice {}">{}</p>"#, esc(kind), esc(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_become_markup() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url("PY HH/ST01&x=1"), "PY+HH%2FST01%26x%3D1");
        assert_eq!(num(148.5), "148.5");
        assert_eq!(num(300.0), "300");
        assert_eq!(num(0.0), "0");
        assert_eq!(num(7.25), "7.25");
    }

    #[test]
    fn analysts_look_officers_act() {
        let v = |role: &str| Viewer {
            identity: "x".into(),
            role: role.into(),
        };
        assert!(!v("analyst").can_act());
        assert!(v("officer").can_act());
        assert!(v("admin").can_act());
    }
}
