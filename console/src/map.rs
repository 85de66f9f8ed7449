//! The map: stations coloured by status, placed in Web Mercator on tiles
//! from `tile_url`, or on a plain background when none is configured.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;

use crate::AppState;
use crate::html::{esc, page, url};
use crate::i18n::Lang;
use crate::session::{Ctx, failure};
use crate::stations::{Status, stations_and_latest, status_of};

/// Web Mercator pixel coordinates at zoom `z` (256-pixel tiles).
pub fn mercator(lat: f64, lon: f64, z: u32) -> (f64, f64) {
    let n = 256.0 * f64::from(1u32 << z);
    let lat = lat.clamp(-85.0511, 85.0511).to_radians();
    let x = (lon + 180.0) / 360.0 * n;
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n;
    (x, y)
}

/// The highest zoom (≤ 15) at which every point fits in `w × h` pixels.
pub fn fit_zoom(points: &[(f64, f64)], w: f64, h: f64) -> u32 {
    (0..=15)
        .rev()
        .find(|&z| {
            let px: Vec<(f64, f64)> = points
                .iter()
                .map(|(la, lo)| mercator(*la, *lo, z))
                .collect();
            let (x0, x1) = px
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
            let (y0, y1) = px
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
            x1 - x0 <= w && y1 - y0 <= h
        })
        .unwrap_or(0)
}

/// Stations coloured by status on tiles from `tile_url`, or on a plain
/// background when none is configured.
pub fn map_svg(
    lang: Lang,
    tile_url: &str,
    stations: &[(String, String, f64, f64, Status)],
) -> String {
    const W: f64 = 960.0;
    const H: f64 = 600.0;
    let coords: Vec<(f64, f64)> = stations.iter().map(|s| (s.2, s.3)).collect();
    let mut s = format!(
        r#"<svg class="map" viewBox="0 0 {W} {H}" role="img" aria-label="{}"><rect class="sea" width="{W}" height="{H}"/>"#,
        lang.t("map")
    );
    if coords.is_empty() {
        s.push_str("</svg>");
        return s;
    }
    let z = fit_zoom(&coords, W - 120.0, H - 120.0);
    let px: Vec<(f64, f64)> = coords
        .iter()
        .map(|(la, lo)| mercator(*la, *lo, z))
        .collect();
    let cx = (px.iter().map(|p| p.0).fold(f64::MAX, f64::min)
        + px.iter().map(|p| p.0).fold(f64::MIN, f64::max))
        / 2.0;
    let cy = (px.iter().map(|p| p.1).fold(f64::MAX, f64::min)
        + px.iter().map(|p| p.1).fold(f64::MIN, f64::max))
        / 2.0;
    let (ox, oy) = (cx - W / 2.0, cy - H / 2.0);
    if !tile_url.is_empty() {
        let tiles = 1i64 << z;
        for ty in (oy / 256.0).floor() as i64..=((oy + H) / 256.0).floor() as i64 {
            for tx in (ox / 256.0).floor() as i64..=((ox + W) / 256.0).floor() as i64 {
                if ty < 0 || ty >= tiles {
                    continue;
                }
                let href = tile_url
                    .replace("{z}", &z.to_string())
                    .replace("{x}", &tx.rem_euclid(tiles).to_string())
                    .replace("{y}", &ty.to_string());
                let _ = write!(
                    s,
                    r#"<image class="tile" href="{}" x="{:.1}" y="{:.1}" width="256" height="256"/>"#,
                    esc(&href),
                    tx as f64 * 256.0 - ox,
                    ty as f64 * 256.0 - oy
                );
            }
        }
    }
    for ((id, name, _, _, status), (x, y)) in stations.iter().zip(&px) {
        let _ = write!(
            s,
            r#"<a href="/stations/{u}"><circle class="marker {k}" data-station="{i}" cx="{:.1}" cy="{:.1}" r="8"><title>{i} · {n} · {l}</title></circle></a>"#,
            x - ox,
            y - oy,
            u = url(id),
            i = esc(id),
            n = esc(name),
            k = status.key(),
            l = lang.t(status.key()),
        );
    }
    s.push_str("</svg>");
    s
}

pub async fn map(State(state): State<AppState>, ctx: Ctx) -> Response {
    let lang = ctx.lang;
    let (stations, latest) = match stations_and_latest(&state, &ctx, Vec::new()).await {
        Ok(x) => x,
        Err(s) => return failure(lang, Some(&ctx.viewer), &s),
    };
    let now = Utc::now();
    let marks: Vec<(String, String, f64, f64, Status)> = stations
        .iter()
        .filter_map(|info| {
            let st = info.station.as_ref()?;
            // A station without coordinates cannot be placed.
            if !(st.latitude.is_finite() && st.longitude.is_finite()) {
                return None;
            }
            let status = status_of(info, latest.get(&st.id), now);
            Some((
                st.id.clone(),
                st.name.clone(),
                st.latitude,
                st.longitude,
                status,
            ))
        })
        .collect();
    let mut s = format!("<h1>{}</h1><p class=\"legend\">", lang.t("map"));
    for k in [Status::Online, Status::Late, Status::Silent, Status::Never] {
        let _ = write!(
            s,
            r#"<span class="badge {}">{}</span> "#,
            k.key(),
            lang.t(k.key())
        );
    }
    s.push_str("</p>");
    s.push_str(&map_svg(lang, &state.config.tile_url, &marks));
    Html(page(lang, Some(&ctx.viewer), "map", lang.t("map"), &s)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_places_stations_and_tiles_only_when_configured() {
        let stations = vec![
            (
                "A".to_string(),
                "a".to_string(),
                13.08,
                109.30,
                Status::Online,
            ),
            (
                "B".to_string(),
                "b".to_string(),
                13.45,
                109.22,
                Status::Silent,
            ),
        ];
        let plain = map_svg(Lang::Vi, "", &stations);
        assert_eq!(plain.matches("<circle").count(), 2);
        assert!(
            !plain.contains("<image"),
            "nothing fetched without tile_url"
        );
        assert!(plain.contains(r#"class="marker silent""#));
        let tiled = map_svg(Lang::Vi, "https://tiles.example/{z}/{x}/{y}.png", &stations);
        assert!(tiled.contains("https://tiles.example/"), "{tiled}");
        // Both markers are inside the picture.
        for cap in tiled.split("cx=\"").skip(1) {
            let x: f64 = cap
                .split('"')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("cx");
            assert!((0.0..=960.0).contains(&x), "{x}");
        }
        // North is up: B (further north) is drawn above A.
        let cy = |svg: &str, id: &str| -> f64 {
            let i = svg.find(&format!("data-station=\"{id}\"")).expect("marker");
            svg[i..]
                .split("cy=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .and_then(|v| v.parse().ok())
                .expect("cy")
        };
        assert!(cy(&plain, "B") < cy(&plain, "A"));
    }

    #[test]
    fn mercator_matches_the_tile_scheme() {
        // Zoom 0: the whole world is one 256-pixel tile; (0, 0) is its centre.
        let (x, y) = mercator(0.0, 0.0, 0);
        assert!((x - 128.0).abs() < 1e-9 && (y - 128.0).abs() < 1e-9);
        // Zoom 1: Hà Nội (21.03 N, 105.85 E) is in tile (1, 0).
        let (x, y) = mercator(21.03, 105.85, 1);
        assert_eq!(((x / 256.0) as i32, (y / 256.0) as i32), (1, 0));
    }
}
