//! Online change detectors over a stream of numbers: ADWIN, Page-Hinkley,
//! and DDM for 0/1 error streams.
//!
//! They follow the algorithms as River (0.26) implements them, so that the
//! oracle test can compare detections position for position: ADWIN2 with
//! exponential buckets (Bifet & Gavaldà 2007), checked every `clock` values;
//! Page-Hinkley with a fading factor; DDM (Gama et al. 2004). Like River,
//! a detector starts afresh after each detection.

use serde::{Deserialize, Serialize};

/// Settings of [`Adwin`]. Defaults are River's (no detection on a million
/// stationary values at error rates 5–50 %, measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdwinConfig {
    /// Confidence: smaller means fewer false detections and later ones.
    pub delta: f64,
    /// Check for a change every `clock` values.
    pub clock: u32,
    /// Buckets of each size kept before two are merged.
    pub max_buckets: usize,
    /// Smallest sub-window compared.
    pub min_window_length: u32,
    /// No check before this many values.
    pub grace_period: u32,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        AdwinConfig {
            delta: 0.002,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
        }
    }
}

/// One bucket size's summaries (sum and variance of `2^level` values each),
/// oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Level {
    sums: Vec<f64>,
    variances: Vec<f64>,
}

/// ADaptive WINdowing: keeps a window of recent values whose mean is
/// stable, and reports a change when two sub-windows' means differ by more
/// than a Hoeffding-style bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adwin {
    config: AdwinConfig,
    /// Level `i` holds summaries of `2^i` values; level 0 the newest.
    levels: Vec<Level>,
    width: f64,
    total: f64,
    /// sum of squared deviations from the mean over the window
    variance: f64,
    tick: u64,
    /// difference of the sub-window means at the last detected cut
    last_change: f64,
}

impl Adwin {
    /// An empty window.
    pub fn new(config: AdwinConfig) -> Self {
        Adwin {
            config,
            levels: vec![Level::default()],
            width: 0.0,
            total: 0.0,
            variance: 0.0,
            tick: 0,
            last_change: 0.0,
        }
    }

    /// Values in the window.
    pub fn width(&self) -> f64 {
        self.width
    }

    /// Mean of the window.
    pub fn mean(&self) -> f64 {
        if self.width > 0.0 {
            self.total / self.width
        } else {
            0.0
        }
    }

    /// Adds a value; `true` when a change is detected (the detector then
    /// starts afresh with the next value).
    pub fn update(&mut self, x: f64) -> bool {
        self.insert(x);
        let change = self.detect();
        if change {
            let last_change = self.last_change;
            *self = Adwin::new(self.config);
            self.last_change = last_change;
        }
        change
    }

    /// The absolute difference of the two sub-window means at the last
    /// detected change.
    pub fn last_change(&self) -> f64 {
        self.last_change
    }

    fn insert(&mut self, x: f64) {
        self.width += 1.0;
        if self.width > 1.0 {
            let d = x - self.total / (self.width - 1.0);
            self.variance += (self.width - 1.0) * d * d / self.width;
        }
        self.total += x;
        self.levels[0].sums.push(x);
        self.levels[0].variances.push(0.0);
        // merge the two oldest summaries of a level that has too many
        let mut i = 0;
        while self.levels[i].sums.len() > self.config.max_buckets {
            let n = (1u64 << i) as f64;
            let level = &mut self.levels[i];
            let (s0, s1) = (level.sums[0], level.sums[1]);
            let (m0, m1) = (s0 / n, s1 / n);
            let v = level.variances[0] + level.variances[1] + n * 0.5 * (m0 - m1) * (m0 - m1);
            level.sums.drain(..2);
            level.variances.drain(..2);
            if self.levels.len() == i + 1 {
                self.levels.push(Level::default());
            }
            self.levels[i + 1].sums.push(s0 + s1);
            self.levels[i + 1].variances.push(v);
            i += 1;
        }
    }

    /// Drops the oldest summary.
    fn drop_oldest(&mut self) {
        let last = self.levels.len() - 1;
        let n = (1u64 << last) as f64;
        let level = &mut self.levels[last];
        let (s, v) = (level.sums.remove(0), level.variances.remove(0));
        self.width -= n;
        self.total -= s;
        let mean = self.total / self.width;
        let d = s / n - mean;
        self.variance -= v + n * self.width * d * d / (n + self.width);
        if self.levels[last].sums.is_empty() && last > 0 {
            self.levels.pop();
        }
    }

    fn detect(&mut self) -> bool {
        self.tick += 1;
        let c = &self.config;
        if !self.tick.is_multiple_of(u64::from(c.clock.max(1)))
            || self.width <= f64::from(c.grace_period)
        {
            return false;
        }
        let min_len = f64::from(c.min_window_length);
        let mut change = false;
        'shrink: loop {
            // cut between older (n0, u0) and newer (n1, u1) parts, oldest summaries first
            let (mut n0, mut u0) = (0.0, 0.0);
            let (mut n1, mut u1) = (self.width, self.total);
            for level in (0..self.levels.len()).rev() {
                let size = (1u64 << level) as f64;
                let count = self.levels[level].sums.len();
                for k in 0..count {
                    if level == 0 && k == count - 1 {
                        break 'shrink;
                    }
                    let s = self.levels[level].sums[k];
                    n0 += size;
                    n1 -= size;
                    u0 += s;
                    u1 -= s;
                    let diff = u0 / n0 - u1 / n1;
                    if n0 >= min_len && n1 >= min_len && self.cut(n0, n1, diff) {
                        change = true;
                        self.last_change = diff.abs();
                        if self.width > 0.0 {
                            self.drop_oldest();
                            continue 'shrink;
                        }
                    }
                }
            }
            break;
        }
        change
    }

    fn cut(&self, n0: f64, n1: f64, mean_diff: f64) -> bool {
        let min_len = f64::from(self.config.min_window_length);
        let delta_prime = (2.0 * self.width.ln() / self.config.delta).ln();
        let m = 1.0 / (n0 - min_len + 1.0) + 1.0 / (n1 - min_len + 1.0);
        let epsilon = (2.0 * m * (self.variance / self.width) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m;
        mean_diff.abs() > epsilon
    }
}

/// Which direction of change [`PageHinkley`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// An increase of the mean (e.g. of an error rate).
    Up,
    /// A decrease.
    Down,
    /// Either.
    Both,
}

/// Settings of [`PageHinkley`]. `delta` and `threshold` are in the
/// stream's units; the defaults suit a 0/1 error stream (no detection on
/// a million stationary values at error rates 5–50 %, measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PageHinkleyConfig {
    /// No detection before this many values.
    pub min_instances: u32,
    /// Magnitude of change tolerated.
    pub delta: f64,
    /// Cumulative deviation that counts as a change.
    pub threshold: f64,
    /// Fading factor of the cumulative sums (1: no fading).
    pub alpha: f64,
    /// Which changes to report.
    pub direction: Direction,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        PageHinkleyConfig {
            min_instances: 30,
            delta: 0.01,
            threshold: 200.0,
            alpha: 1.0,
            direction: Direction::Up,
        }
    }
}

/// The Page-Hinkley test: cumulative deviation from the running mean
/// against its running extreme.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    n: u64,
    mean: f64,
    sum_up: f64,
    sum_down: f64,
    min_up: f64,
    max_down: f64,
    /// the last statistic (the larger test value)
    statistic: f64,
}

impl PageHinkley {
    /// A fresh test.
    pub fn new(config: PageHinkleyConfig) -> Self {
        PageHinkley {
            config,
            n: 0,
            mean: 0.0,
            sum_up: 0.0,
            sum_down: 0.0,
            min_up: f64::INFINITY,
            // River starts the running maximum at -1
            max_down: -1.0,
            statistic: 0.0,
        }
    }

    /// The test value of the last update.
    pub fn statistic(&self) -> f64 {
        self.statistic
    }

    /// Adds a value; `true` on a change (the test then starts afresh).
    pub fn update(&mut self, x: f64) -> bool {
        let c = self.config;
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        let dev = x - self.mean;
        self.sum_up = c.alpha * self.sum_up + dev - c.delta;
        self.sum_down = c.alpha * self.sum_down + dev + c.delta;
        self.min_up = self.min_up.min(self.sum_up);
        self.max_down = self.max_down.max(self.sum_down);
        if self.n < u64::from(c.min_instances) {
            return false;
        }
        let up = self.sum_up - self.min_up;
        let down = self.max_down - self.sum_down;
        let (fired, statistic) = match c.direction {
            Direction::Up => (up > c.threshold, up),
            Direction::Down => (down > c.threshold, down),
            Direction::Both => (up > c.threshold || down > c.threshold, up.max(down)),
        };
        self.statistic = statistic;
        if fired {
            *self = PageHinkley::new(c);
            self.statistic = statistic;
        }
        fired
    }
}

/// Settings of [`Ddm`]. River's default threshold is 3; with it DDM fired
/// on a stationary 5 % error stream after 690,000 values (its standard
/// deviation shrinks as the stream grows, so a small wander reaches three of
/// them), so the default here is 4 (no detection on a million stationary
/// values at 5–50 %, measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DdmConfig {
    /// No detection before this many values.
    pub warm_start: u32,
    /// Standard deviations above the best error rate that count as a change.
    pub drift_threshold: f64,
}

impl Default for DdmConfig {
    fn default() -> Self {
        DdmConfig {
            warm_start: 30,
            drift_threshold: 4.0,
        }
    }
}

/// Drift Detection Method for a 0/1 error stream: the error rate plus its
/// standard deviation against the best seen so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ddm {
    config: DdmConfig,
    n: u64,
    p: f64,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    statistic: f64,
}

impl Ddm {
    /// A fresh detector.
    pub fn new(config: DdmConfig) -> Self {
        Ddm {
            config,
            n: 0,
            p: 0.0,
            p_min: 0.0,
            s_min: 0.0,
            ps_min: f64::INFINITY,
            statistic: 0.0,
        }
    }

    /// The last test value: `(p + s − p_min) / s_min`.
    pub fn statistic(&self) -> f64 {
        self.statistic
    }

    /// Adds one outcome (`true`: an error); `true` on a change.
    pub fn update(&mut self, error: bool) -> bool {
        let x = f64::from(u8::from(error));
        self.n += 1;
        self.p += (x - self.p) / self.n as f64;
        let s = (self.p * (1.0 - self.p) / self.n as f64).sqrt();
        if self.n <= u64::from(self.config.warm_start) {
            return false;
        }
        if self.p + s <= self.ps_min {
            self.p_min = self.p;
            self.s_min = s;
            self.ps_min = self.p + s;
        }
        self.statistic = if self.s_min > 0.0 {
            (self.p + s - self.p_min) / self.s_min
        } else {
            0.0
        };
        let fired = self.p + s > self.p_min + self.config.drift_threshold * self.s_min;
        if fired {
            let statistic = self.statistic;
            *self = Ddm::new(self.config);
            self.statistic = statistic;
        }
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adwin_keeps_a_constant_stream() {
        let mut a = Adwin::new(AdwinConfig::default());
        for _ in 0..10_000 {
            assert!(!a.update(1.0));
        }
        assert_eq!(a.width(), 10_000.0);
        assert_eq!(a.mean(), 1.0);
    }

    #[test]
    fn adwin_sees_a_jump() {
        let mut a = Adwin::new(AdwinConfig::default());
        for i in 0..1000 {
            a.update(f64::from(i % 2));
        }
        let at = (0..1000).find(|_| a.update(5.0));
        assert!(at.is_some_and(|i| i < 100), "{at:?}");
    }

    #[test]
    fn page_hinkley_sees_a_rise() {
        let mut ph = PageHinkley::new(PageHinkleyConfig {
            threshold: 20.0,
            ..PageHinkleyConfig::default()
        });
        for i in 0..2000 {
            assert!(!ph.update(f64::from(u8::from(i % 10 == 0))));
        }
        let at = (0..2000).find(|i| ph.update(f64::from(u8::from(i % 2 == 0))));
        assert!(at.is_some_and(|i| i < 100), "{at:?}");
    }

    #[test]
    fn ddm_sees_more_errors() {
        let mut d = Ddm::new(DdmConfig::default());
        for i in 0..2000 {
            assert!(!d.update(i % 10 == 0));
        }
        let at = (0..2000).find(|i| d.update(i % 3 == 0));
        assert!(at.is_some(), "{at:?}");
    }
}
