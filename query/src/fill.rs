//! Filling empty buckets, per request: none (left out), null, last
//! observation carried forward, or linear between neighbours; never
//! across a gap longer than `max_gap` buckets (0: any).

/// How empty buckets are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    None,
    Null,
    Locf,
    Linear,
}

/// A bucket: its function values when measured, `None` when empty.
pub type Slot = Option<Vec<f64>>;

/// What each bucket of the grid answers: `Some((values, filled))`, or
/// `None` for a bucket left out. `width` is the number of functions.
pub fn fill(
    slots: &[Slot],
    how: Fill,
    max_gap: usize,
    width: usize,
) -> Vec<Option<(Vec<f64>, bool)>> {
    let n = slots.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if let Some(v) = &slots[i] {
            out.push(Some((v.clone(), false)));
            i += 1;
            continue;
        }
        // A run of empty buckets [i, j).
        let j = (i..n).find(|&k| slots[k].is_some()).unwrap_or(n);
        let gap = j - i;
        let fits = max_gap == 0 || gap <= max_gap;
        let before = i.checked_sub(1).and_then(|k| slots[k].as_ref());
        let after = slots.get(j).and_then(|s| s.as_ref());
        for k in i..j {
            let filled = match how {
                Fill::None => None,
                Fill::Null => Some((vec![f64::NAN; width], false)),
                Fill::Locf => match before {
                    Some(b) if fits => Some((b.clone(), true)),
                    _ => Some((vec![f64::NAN; width], false)),
                },
                Fill::Linear => match (before, after) {
                    (Some(b), Some(a)) if fits => {
                        let t = (k - i + 1) as f64 / (gap + 1) as f64;
                        let v = b.iter().zip(a).map(|(x, y)| x + (y - x) * t).collect();
                        Some((v, true))
                    }
                    _ => Some((vec![f64::NAN; width], false)),
                },
            };
            out.push(filled);
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: f64) -> Slot {
        Some(vec![v])
    }

    fn values(r: &[Option<(Vec<f64>, bool)>]) -> Vec<String> {
        r.iter()
            .map(|x| match x {
                None => "-".into(),
                Some((v, f)) if v[0].is_nan() => format!("nan{}", if *f { "*" } else { "" }),
                Some((v, f)) => format!("{}{}", v[0], if *f { "*" } else { "" }),
            })
            .collect()
    }

    #[test]
    fn each_mode() {
        let slots = [s(1.0), None, None, s(4.0), None];
        assert_eq!(
            values(&fill(&slots, Fill::None, 0, 1)),
            ["1", "-", "-", "4", "-"]
        );
        assert_eq!(
            values(&fill(&slots, Fill::Null, 0, 1)),
            ["1", "nan", "nan", "4", "nan"]
        );
        assert_eq!(
            values(&fill(&slots, Fill::Locf, 0, 1)),
            ["1", "1*", "1*", "4", "4*"]
        );
        assert_eq!(
            values(&fill(&slots, Fill::Linear, 0, 1)),
            ["1", "2*", "3*", "4", "nan"]
        );
    }

    #[test]
    fn no_fill_across_a_long_gap() {
        let slots = [s(1.0), None, None, s(4.0)];
        assert_eq!(
            values(&fill(&slots, Fill::Locf, 1, 1)),
            ["1", "nan", "nan", "4"]
        );
        assert_eq!(
            values(&fill(&slots, Fill::Linear, 1, 1)),
            ["1", "nan", "nan", "4"]
        );
        assert_eq!(
            values(&fill(&slots, Fill::Linear, 2, 1)),
            ["1", "2*", "3*", "4"]
        );
    }
}
