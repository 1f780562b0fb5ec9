//! Event-time windows and the watermark.

use driftwatch_ingest::EventTime;

use crate::error::{Error, Result};

/// Tumbling (`slide == size`) or hopping (`slide < size`) windows, aligned to
/// the Unix epoch: window starts are the multiples of `slide`. A window is the
/// half-open interval `[start, start + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    size: i64,
    slide: i64,
}

impl WindowSpec {
    /// Tumbling windows of `size_ms`.
    pub fn tumbling(size_ms: i64) -> Result<Self> {
        Self::hopping(size_ms, size_ms)
    }

    /// Hopping windows of `size_ms`, a new one every `slide_ms`.
    pub fn hopping(size_ms: i64, slide_ms: i64) -> Result<Self> {
        if size_ms <= 0 {
            return Err(Error::Config {
                key: "window.size",
                message: format!("must be positive, got {size_ms} ms"),
            });
        }
        if slide_ms <= 0 || slide_ms > size_ms {
            return Err(Error::Config {
                key: "window.slide",
                message: format!(
                    "must be positive and at most window.size ({size_ms} ms), got {slide_ms} ms"
                ),
            });
        }
        Ok(WindowSpec {
            size: size_ms,
            slide: slide_ms,
        })
    }

    /// Window length in ms.
    pub fn size(&self) -> i64 {
        self.size
    }

    /// Distance between window starts in ms.
    pub fn slide(&self) -> i64 {
        self.slide
    }

    /// Whether windows overlap.
    pub fn is_hopping(&self) -> bool {
        self.slide < self.size
    }

    /// Start of the latest window that contains `t`.
    fn last_start(&self, t: EventTime) -> i64 {
        t.div_euclid(self.slide) * self.slide
    }

    /// Every window `[start, end)` that contains `t`, earliest first.
    pub fn windows(&self, t: EventTime) -> impl Iterator<Item = (EventTime, EventTime)> + use<> {
        let last = self.last_start(t);
        // smallest multiple of slide strictly greater than t - size
        let first = (t - self.size).div_euclid(self.slide) * self.slide + self.slide;
        let (size, slide) = (self.size, self.slide);
        (0..)
            .map(move |k| first + k * slide)
            .take_while(move |s| *s <= last)
            .map(move |s| (s, s + size))
    }

    /// End of the last window that contains `t`: once the watermark reaches
    /// it, an event at `t` is late.
    pub fn last_end(&self, t: EventTime) -> EventTime {
        self.last_start(t) + self.size
    }
}

/// Largest event time seen minus the allowed lateness. It never goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    max_seen: Option<EventTime>,
    lateness: i64,
}

impl Watermark {
    /// A watermark that trails the largest event time by `lateness_ms`.
    pub fn new(lateness_ms: i64) -> Self {
        Watermark {
            max_seen: None,
            lateness: lateness_ms.max(0),
        }
    }

    /// Takes an event time into account.
    pub fn observe(&mut self, t: EventTime) {
        self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
    }

    /// The current watermark; `None` before the first event.
    pub fn current(&self) -> Option<EventTime> {
        self.max_seen.map(|m| m.saturating_sub(self.lateness))
    }

    /// The allowed lateness in ms.
    pub fn lateness(&self) -> i64 {
        self.lateness
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tumbling_windows() {
        let w = WindowSpec::tumbling(10).expect("valid");
        assert_eq!(w.windows(0).collect::<Vec<_>>(), vec![(0, 10)]);
        assert_eq!(w.windows(9).collect::<Vec<_>>(), vec![(0, 10)]);
        assert_eq!(w.windows(10).collect::<Vec<_>>(), vec![(10, 20)]);
        assert_eq!(w.windows(-1).collect::<Vec<_>>(), vec![(-10, 0)]);
        assert_eq!(w.last_end(9), 10);
    }

    #[test]
    fn hopping_windows() {
        let w = WindowSpec::hopping(10, 5).expect("valid");
        assert_eq!(w.windows(7).collect::<Vec<_>>(), vec![(0, 10), (5, 15)]);
        assert_eq!(w.windows(5).collect::<Vec<_>>(), vec![(0, 10), (5, 15)]);
        assert_eq!(w.windows(4).collect::<Vec<_>>(), vec![(-5, 5), (0, 10)]);
        let w = WindowSpec::hopping(10, 3).expect("valid");
        assert_eq!(
            w.windows(10).collect::<Vec<_>>(),
            vec![(3, 13), (6, 16), (9, 19)]
        );
    }

    #[test]
    fn bad_specs_name_the_key() {
        assert!(
            WindowSpec::tumbling(0)
                .unwrap_err()
                .to_string()
                .contains("window.size")
        );
        assert!(
            WindowSpec::hopping(10, 20)
                .unwrap_err()
                .to_string()
                .contains("window.slide")
        );
        assert!(
            WindowSpec::hopping(10, 0)
                .unwrap_err()
                .to_string()
                .contains("window.slide")
        );
    }

    proptest! {
        /// An event belongs to exactly the windows whose interval contains it,
        /// and to ceil(size/slide) or floor(size/slide) of them.
        #[test]
        fn assignment_matches_the_definition(
            size in 1i64..500, slide_frac in 1i64..=100, t in -100_000i64..100_000
        ) {
            let slide = (size * slide_frac / 100).max(1);
            let w = WindowSpec::hopping(size, slide).expect("valid");
            let got: Vec<_> = w.windows(t).collect();
            // brute force over nearby window starts
            let mut want = Vec::new();
            let mut s = (t - size - slide).div_euclid(slide) * slide;
            while s <= t {
                if s <= t && t < s + size { want.push((s, s + size)); }
                s += slide;
            }
            prop_assert_eq!(&got, &want);
            let n = got.len() as i64;
            prop_assert!(n == size / slide || n == (size + slide - 1) / slide);
            prop_assert_eq!(w.last_end(t), got.last().map(|x| x.1).unwrap_or(i64::MIN));
        }

        /// The watermark never decreases, and never passes the largest time seen.
        #[test]
        fn watermark_is_monotone(
            times in proptest::collection::vec(0i64..1_000_000, 1..200), lateness in 0i64..10_000
        ) {
            let mut wm = Watermark::new(lateness);
            let mut previous = None;
            let mut max = i64::MIN;
            for t in times {
                wm.observe(t);
                max = max.max(t);
                let now = wm.current().expect("seen an event");
                prop_assert!(previous.is_none_or(|p| now >= p));
                prop_assert_eq!(now, max - lateness);
                previous = Some(now);
            }
        }
    }
}
