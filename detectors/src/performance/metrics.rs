//! Performance metrics over labelled predictions: mergeable accumulators
//! for classification and regression, and the rows they report.
//!
//! Definitions follow scikit-learn, which the oracle tests compare against:
//! probabilities are clipped to `[ε, 1 − ε]` (ε = `f64::EPSILON`) for the
//! log-loss; the binary Brier score is `mean((y − p)²)`, the multi-class one
//! `mean(Σ_k (y_k − p_k)²)`; precision, recall and F1 with a zero
//! denominator are undefined (`NULL`, sklearn's `zero_division=nan`) and
//! left out of the macro average. MAPE is taken over labels other than zero
//! (a zero label makes the percentage undefined; those are counted instead).

use std::borrow::Cow;

use compact_str::CompactString;
use driftwatch_ingest::{Label, Prediction};
use serde::{Deserialize, Serialize};

use super::auc::ScoreCounts;

/// What kind of model a window's metrics describe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Task {
    /// Two classes; `score` is the probability of `positive`.
    Binary {
        /// The positive class (label value).
        positive: CompactString,
        /// The class predicted when only a score is sent and it is below
        /// `threshold`.
        negative: CompactString,
        /// Score from which the positive class is predicted when the event
        /// carries no `class`.
        threshold: f64,
    },
    /// More than two classes; `probabilities` (when sent) per class.
    Multiclass,
    /// A number.
    Regression,
}

impl Task {
    /// A binary task with positive class `"1"`, negative `"0"`, threshold 0.5.
    pub fn binary() -> Task {
        Task::Binary {
            positive: "1".into(),
            negative: "0".into(),
            threshold: 0.5,
        }
    }

    /// The task an event's output suggests: `value` → regression,
    /// `probabilities` → multi-class, otherwise binary with the defaults.
    pub fn infer(prediction: &Prediction) -> Task {
        if prediction.value.is_some() {
            Task::Regression
        } else if !prediction.probabilities.is_empty() {
            Task::Multiclass
        } else {
            Task::binary()
        }
    }

    /// The class `label` names for this task, `None` when it names none (a
    /// regression task, or a number with a fraction). Integers are the
    /// classes they spell (`1` is `"1"`, as pandas and scikit-learn write
    /// labels), and for a binary task whose classes are `"1"`/`"0"`,
    /// `true`/`false` are those classes.
    pub fn label_class<'a>(&self, label: &'a Label) -> Option<Cow<'a, str>> {
        let class = match label {
            Label::Class(c) => Cow::Borrowed(c.as_str()),
            Label::Value(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => {
                Cow::Owned(format!("{}", *v as i64))
            }
            Label::Value(_) => return None,
        };
        match self {
            Task::Regression => None,
            Task::Multiclass => Some(class),
            Task::Binary {
                positive, negative, ..
            } => {
                if class == positive.as_str() || class == negative.as_str() {
                    return Some(class);
                }
                match (truth(&class), truth(positive), truth(negative)) {
                    (Some(true), Some(true), Some(false)) => Some(Cow::Owned(positive.to_string())),
                    (Some(false), Some(true), Some(false)) => {
                        Some(Cow::Owned(negative.to_string()))
                    }
                    _ => Some(class),
                }
            }
        }
    }

    /// Whether [`learn_classes`](Self::learn_classes) would learn a class
    /// name from `prediction` (cheap: no allocation, no look-up).
    pub fn learns_from(&self, prediction: &Prediction) -> bool {
        let Task::Binary {
            positive,
            negative,
            threshold,
        } = self
        else {
            return false;
        };
        let (Some(class), Some(score)) = (&prediction.class, prediction.score) else {
            return false;
        };
        if class == positive.as_str() || class == negative.as_str() || truth(class).is_some() {
            return false;
        }
        if score >= *threshold {
            positive == "1"
        } else {
            negative == "0"
        }
    }

    /// Learns a binary task's class names from a prediction that carries
    /// both its class and its score: a class said with a score at or above
    /// the threshold is the positive class, below it the negative one. Only
    /// names still at their defaults (`"1"`, `"0"`) are learnt, once each;
    /// for a task whose classes were configured this is not called.
    pub fn learn_classes(&mut self, prediction: &Prediction) {
        if !self.learns_from(prediction) {
            return;
        }
        if let (
            Task::Binary {
                positive,
                negative,
                threshold,
            },
            Some(class),
            Some(score),
        ) = (self, &prediction.class, prediction.score)
        {
            let name = if score >= *threshold {
                positive
            } else {
                negative
            };
            *name = class.as_str().into();
        }
    }

    /// The name used in configuration and output.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Binary { .. } => "binary",
            Task::Multiclass => "multiclass",
            Task::Regression => "regression",
        }
    }
}

/// A class name that spells a truth value (`1`/`true`, `0`/`false`).
fn truth(class: &str) -> Option<bool> {
    match class {
        "1" | "1.0" | "true" | "True" | "TRUE" => Some(true),
        "0" | "0.0" | "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Most classes one window's counts tell apart; the classes seen after
/// them are counted together as [`OTHER_CLASS`]. The confusion counts grow
/// with the square of the classes: a stream of thousands of distinct class
/// names must not make them gigabytes.
pub const MAX_CLASSES: usize = 128;

/// The class the classes past [`MAX_CLASSES`] are counted as.
pub const OTHER_CLASS: &str = "(other)";

/// The predicted class counted when a prediction and its label are two
/// different classes past [`MAX_CLASSES`]: counted as `(other)` both, the
/// prediction would count as right.
pub const OTHER_MISMATCH_CLASS: &str = "(other, not the label)";

/// What a prediction said, kept until its label arrives.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// Predicted class.
    pub class: Option<CompactString>,
    /// Probability of the positive class.
    pub score: Option<f64>,
    /// Predicted value.
    pub value: Option<f64>,
    /// Class probabilities.
    pub probabilities: Vec<(CompactString, f64)>,
}

impl From<&Prediction> for Outcome {
    fn from(p: &Prediction) -> Self {
        Outcome {
            class: p.class.as_deref().map(CompactString::from),
            score: p.score,
            value: p.value,
            probabilities: p
                .probabilities
                .iter()
                .map(|(c, x)| (CompactString::from(c.as_str()), *x))
                .collect(),
        }
    }
}

/// Why a label could not be scored against its prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unscorable {
    /// A class label for a regression model, or a number for a classifier.
    LabelKind,
    /// A classifier's prediction carried neither a class, a score nor
    /// probabilities (or a regression prediction no value).
    NoPrediction,
    /// A binary model's prediction carried only a score, and its label is
    /// neither the positive nor the negative class: which class the score
    /// is the probability of is unknown (`positive_class` is not set).
    UnknownClass,
}

/// One metric value of a window: `metric` for `class` (`None`: the whole
/// model, or the macro average), with `predicted` only for confusion counts.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// Metric name (`accuracy`, `precision`, `confusion`, `mae`, …).
    pub metric: &'static str,
    /// The class a per-class metric is about (the true class for `confusion`).
    pub class: Option<String>,
    /// The predicted class of a `confusion` count.
    pub predicted: Option<String>,
    /// The value; `None` when undefined (e.g. precision of a class never predicted).
    pub value: Option<f64>,
}

fn value(metric: &'static str, v: Option<f64>) -> MetricValue {
    MetricValue {
        metric,
        class: None,
        predicted: None,
        value: v,
    }
}

/// The class a classifier's prediction names: its `class`, else (binary)
/// the score against the threshold, else the most probable class.
pub fn predicted_class<'a>(task: &'a Task, outcome: &'a Outcome) -> Option<&'a str> {
    match (task, &outcome.class, outcome.score) {
        (_, Some(c), _) => Some(c),
        (
            Task::Binary {
                positive,
                negative,
                threshold,
            },
            None,
            Some(s),
        ) => Some(if s >= *threshold { positive } else { negative }),
        _ => outcome
            .probabilities
            .iter()
            // the first of equal maxima, like numpy's argmax
            .fold(None::<&(CompactString, f64)>, |best, p| match best {
                Some(b) if b.1 >= p.1 => Some(b),
                _ => Some(p),
            })
            .map(|(c, _)| c.as_str()),
    }
}

/// Classification counts and sums of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// Classes seen (true or predicted), in first-seen order.
    classes: Vec<CompactString>,
    /// `confusion[true][predicted]`, square over `classes`.
    confusion: Vec<Vec<u64>>,
    /// Sum of per-event log-loss, and how many events had probabilities.
    log_loss: f64,
    brier: f64,
    probabilistic: u64,
    /// Binary only: scores of positive and negative labels.
    scores: Option<ScoreCounts>,
}

impl Classification {
    fn class_index(&mut self, class: &str) -> usize {
        if let Some(i) = self.classes.iter().position(|c| c == class) {
            return i;
        }
        if self.classes.len() >= MAX_CLASSES
            && class != OTHER_CLASS
            && class != OTHER_MISMATCH_CLASS
        {
            return self.class_index(OTHER_CLASS);
        }
        self.classes.push(class.into());
        for row in &mut self.confusion {
            row.push(0);
        }
        self.confusion.push(vec![0; self.classes.len()]);
        self.classes.len() - 1
    }

    fn add(&mut self, task: &Task, outcome: &Outcome, truth: &str) -> Result<(), Unscorable> {
        let predicted = predicted_class(task, outcome).ok_or(Unscorable::NoPrediction)?;
        let t = self.class_index(truth);
        let mut p = self.class_index(predicted);
        if p == t && predicted != truth {
            // two classes past the bound, counted as one
            p = self.class_index(OTHER_MISMATCH_CLASS);
        }
        self.confusion[t][p] += 1;
        let eps = f64::EPSILON;
        match task {
            Task::Binary { positive, .. } => {
                if let Some(s) = outcome.score {
                    let y = truth == positive.as_str();
                    let clipped = s.clamp(eps, 1.0 - eps);
                    self.log_loss -= if y {
                        clipped.ln()
                    } else {
                        (1.0 - clipped).ln()
                    };
                    let d = f64::from(u8::from(y)) - s;
                    self.brier += d * d;
                    self.probabilistic += 1;
                    self.scores.get_or_insert_default().add(s, y);
                }
            }
            Task::Multiclass => {
                if !outcome.probabilities.is_empty() {
                    let mut p_true = 0.0;
                    let mut brier = 0.0;
                    let mut seen_true = false;
                    for (c, p) in &outcome.probabilities {
                        let y = c == truth;
                        if y {
                            p_true = *p;
                            seen_true = true;
                        }
                        let d = f64::from(u8::from(y)) - p;
                        brier += d * d;
                    }
                    if !seen_true {
                        brier += 1.0;
                    }
                    self.log_loss -= p_true.clamp(eps, 1.0 - eps).ln();
                    self.brier += brier;
                    self.probabilistic += 1;
                }
            }
            Task::Regression => {}
        }
        Ok(())
    }

    fn merge(&mut self, other: Classification) {
        let map: Vec<usize> = other.classes.iter().map(|c| self.class_index(c)).collect();
        for (i, row) in other.confusion.iter().enumerate() {
            for (j, n) in row.iter().enumerate() {
                if *n == 0 {
                    continue;
                }
                let (t, mut p) = (map[i], map[j]);
                if i != j && t == p {
                    // two classes counted as one past the bound
                    p = self.class_index(OTHER_MISMATCH_CLASS);
                }
                self.confusion[t][p] += n;
            }
        }
        self.log_loss += other.log_loss;
        self.brier += other.brier;
        self.probabilistic += other.probabilistic;
        if let Some(s) = other.scores {
            self.scores.get_or_insert_default().merge(s);
        }
    }

    fn values(&self, task: &Task, out: &mut Vec<MetricValue>) {
        let k = self.classes.len();
        let total: u64 = self.confusion.iter().flatten().sum();
        if total == 0 {
            return;
        }
        let correct: u64 = (0..k).map(|i| self.confusion[i][i]).sum();
        out.push(value("accuracy", Some(correct as f64 / total as f64)));
        // classes in name order, so that output does not depend on arrival order
        let mut order: Vec<usize> = (0..k).collect();
        order.sort_by(|&a, &b| self.classes[a].cmp(&self.classes[b]));
        let mut per_class = Vec::with_capacity(3 * k);
        let (mut sums, mut defined) = ([0.0; 3], [0usize; 3]);
        for &c in &order {
            let tp = self.confusion[c][c] as f64;
            let predicted: u64 = (0..k).map(|t| self.confusion[t][c]).sum();
            let actual: u64 = self.confusion[c].iter().sum();
            let precision = (predicted > 0).then(|| tp / predicted as f64);
            let recall = (actual > 0).then(|| tp / actual as f64);
            let f1 = (predicted + actual > 0).then(|| 2.0 * tp / (predicted + actual) as f64);
            for (i, (name, v)) in [("precision", precision), ("recall", recall), ("f1", f1)]
                .into_iter()
                .enumerate()
            {
                if let Some(v) = v {
                    sums[i] += v;
                    defined[i] += 1;
                }
                per_class.push(MetricValue {
                    metric: name,
                    class: Some(self.classes[c].to_string()),
                    predicted: None,
                    value: v,
                });
            }
        }
        for (i, name) in ["precision", "recall", "f1"].into_iter().enumerate() {
            out.push(value(
                name,
                (defined[i] > 0).then(|| sums[i] / defined[i] as f64),
            ));
        }
        out.extend(per_class);
        if self.probabilistic > 0 {
            let n = self.probabilistic as f64;
            out.push(value("log_loss", Some(self.log_loss / n)));
            out.push(value("brier", Some(self.brier / n)));
        }
        if let Task::Binary { positive, .. } = task {
            let predicted_positive: u64 = self
                .classes
                .iter()
                .position(|c| c == positive)
                .map(|p| (0..k).map(|t| self.confusion[t][p]).sum())
                .unwrap_or(0);
            out.push(value(
                "positive_rate",
                Some(predicted_positive as f64 / total as f64),
            ));
            if let Some(scores) = &self.scores {
                out.push(value("roc_auc", scores.auc()));
                out.push(value("roc_auc_error_bound", Some(scores.auc_error_bound())));
            }
        }
        for &t in &order {
            for &p in &order {
                out.push(MetricValue {
                    metric: "confusion",
                    class: Some(self.classes[t].to_string()),
                    predicted: Some(self.classes[p].to_string()),
                    value: Some(self.confusion[t][p] as f64),
                });
            }
        }
    }
}

/// Regression sums of one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    n: u64,
    abs_error: f64,
    sq_error: f64,
    error: f64,
    /// sum of |error| / |label| over labels other than zero, and their count
    pct_error: f64,
    pct_n: u64,
}

impl Regression {
    fn add(&mut self, predicted: f64, truth: f64) {
        let e = predicted - truth;
        self.n += 1;
        self.abs_error += e.abs();
        self.sq_error += e * e;
        self.error += e;
        if truth != 0.0 {
            self.pct_error += e.abs() / truth.abs();
            self.pct_n += 1;
        }
    }

    fn merge(&mut self, o: Regression) {
        self.n += o.n;
        self.abs_error += o.abs_error;
        self.sq_error += o.sq_error;
        self.error += o.error;
        self.pct_error += o.pct_error;
        self.pct_n += o.pct_n;
    }

    fn values(&self, out: &mut Vec<MetricValue>) {
        if self.n == 0 {
            return;
        }
        let n = self.n as f64;
        out.push(value("mae", Some(self.abs_error / n)));
        out.push(value("rmse", Some((self.sq_error / n).sqrt())));
        out.push(value(
            "mape",
            (self.pct_n > 0).then(|| self.pct_error / self.pct_n as f64),
        ));
        out.push(value(
            "mape_zero_labels",
            Some((self.n - self.pct_n) as f64),
        ));
        out.push(value("mean_error", Some(self.error / n)));
    }
}

/// The metrics of one window's labelled predictions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Classification counts (classifiers).
    pub classification: Classification,
    /// Regression sums (regression models).
    pub regression: Regression,
}

impl Metrics {
    /// Scores one prediction against its label.
    pub fn add(&mut self, task: &Task, outcome: &Outcome, label: &Label) -> Result<(), Unscorable> {
        match (task, label) {
            (Task::Regression, Label::Value(truth)) => {
                let predicted = outcome.value.ok_or(Unscorable::NoPrediction)?;
                self.regression.add(predicted, *truth);
                Ok(())
            }
            (Task::Regression, Label::Class(_)) => Err(Unscorable::LabelKind),
            _ => {
                let truth = scorable_class(task, outcome, label)?;
                self.classification.add(task, outcome, &truth)
            }
        }
    }

    /// Adds everything `other` scored.
    pub fn merge(&mut self, other: Metrics) {
        self.classification.merge(other.classification);
        self.regression.merge(other.regression);
    }

    /// The metric values, in a fixed order.
    pub fn values(&self, task: &Task) -> Vec<MetricValue> {
        let mut out = Vec::new();
        match task {
            Task::Regression => self.regression.values(&mut out),
            _ => self.classification.values(task, &mut out),
        }
        out
    }

    /// Whether one labelled prediction was right: for classifiers the class,
    /// for regression `None` (see the absolute error instead).
    pub fn correct(task: &Task, outcome: &Outcome, label: &Label) -> Option<bool> {
        let truth = scorable_class(task, outcome, label).ok()?;
        predicted_class(task, outcome).map(|p| p == truth)
    }
}

/// The class a classifier's label names, if it can be scored against
/// `outcome` (see [`Unscorable`]).
fn scorable_class<'a>(
    task: &Task,
    outcome: &Outcome,
    label: &'a Label,
) -> Result<Cow<'a, str>, Unscorable> {
    let truth = task.label_class(label).ok_or(Unscorable::LabelKind)?;
    if let Task::Binary {
        positive, negative, ..
    } = task
        && outcome.class.is_none()
        && truth != positive.as_str()
        && truth != negative.as_str()
    {
        return Err(Unscorable::UnknownClass);
    }
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(values: &[MetricValue], metric: &str, class: Option<&str>) -> Option<f64> {
        values
            .iter()
            .find(|v| v.metric == metric && v.class.as_deref() == class && v.predicted.is_none())
            .and_then(|v| v.value)
    }

    fn scored(score: f64) -> Outcome {
        Outcome {
            score: Some(score),
            ..Outcome::default()
        }
    }

    #[test]
    fn binary_from_scores() {
        let task = Task::binary();
        let mut m = Metrics::default();
        for (s, y) in [(0.9, "1"), (0.8, "0"), (0.3, "1"), (0.1, "0")] {
            m.add(&task, &scored(s), &Label::Class(y.into())).unwrap();
        }
        let v = m.values(&task);
        assert_eq!(get(&v, "accuracy", None), Some(0.5));
        assert_eq!(get(&v, "precision", Some("1")), Some(0.5));
        assert_eq!(get(&v, "recall", Some("1")), Some(0.5));
        assert_eq!(get(&v, "positive_rate", None), Some(0.5));
        assert_eq!(get(&v, "roc_auc", None), Some(0.75));
    }

    #[test]
    fn a_class_never_predicted_has_no_precision() {
        let task = Task::Multiclass;
        let mut m = Metrics::default();
        let said = |c: &str| Outcome {
            class: Some(c.into()),
            ..Outcome::default()
        };
        m.add(&task, &said("a"), &Label::Class("a".into())).unwrap();
        m.add(&task, &said("a"), &Label::Class("b".into())).unwrap();
        let v = m.values(&task);
        assert_eq!(get(&v, "precision", Some("b")), None);
        assert_eq!(get(&v, "recall", Some("b")), Some(0.0));
        // macro precision over the defined class only
        assert_eq!(get(&v, "precision", None), Some(0.5));
    }

    #[test]
    fn label_kind_must_fit_the_task() {
        let mut m = Metrics::default();
        assert_eq!(
            m.add(&Task::Regression, &scored(0.5), &Label::Class("1".into())),
            Err(Unscorable::LabelKind)
        );
        assert_eq!(
            m.add(&Task::Regression, &scored(0.5), &Label::Value(1.0)),
            Err(Unscorable::NoPrediction)
        );
    }

    #[test]
    fn mape_skips_zero_labels() {
        let mut m = Metrics::default();
        let said = |x| Outcome {
            value: Some(x),
            ..Outcome::default()
        };
        m.add(&Task::Regression, &said(2.0), &Label::Value(1.0))
            .unwrap();
        m.add(&Task::Regression, &said(1.0), &Label::Value(0.0))
            .unwrap();
        let v = m.values(&Task::Regression);
        assert_eq!(get(&v, "mape", None), Some(1.0));
        assert_eq!(get(&v, "mape_zero_labels", None), Some(1.0));
        assert_eq!(get(&v, "mae", None), Some(1.0));
        assert_eq!(get(&v, "mean_error", None), Some(1.0));
    }

    /// Regression (issue 41, item 1): `"label": 1` (pandas, scikit-learn)
    /// for a classifier of classes `"0"`/`"1"` was counted unscorable.
    #[test]
    fn integer_and_boolean_labels_are_the_classes_they_equal() {
        let task = Task::binary();
        let mut m = Metrics::default();
        for (s, y) in [
            (0.9, Label::Value(1.0)),
            (0.8, Label::Value(0.0)),
            (0.3, Label::Class("true".into())),
            (0.1, Label::Class("false".into())),
        ] {
            m.add(&task, &scored(s), &y).expect("scored");
        }
        let v = m.values(&task);
        assert_eq!(get(&v, "accuracy", None), Some(0.5));
        assert_eq!(get(&v, "roc_auc", None), Some(0.75));
        assert_eq!(
            Metrics::correct(&task, &scored(0.9), &Label::Value(1.0)),
            Some(true)
        );
        assert_eq!(
            m.add(&task, &scored(0.9), &Label::Value(0.5)),
            Err(Unscorable::LabelKind)
        );
        let multi = Task::Multiclass;
        assert_eq!(multi.label_class(&Label::Value(3.0)).as_deref(), Some("3"));
        assert_eq!(
            multi.label_class(&Label::Value(-2.0)).as_deref(),
            Some("-2")
        );
        // `true` is a class of its own where the classes are not 1/0
        let named = Task::Binary {
            positive: "yes".into(),
            negative: "no".into(),
            threshold: 0.5,
        };
        assert_eq!(
            named.label_class(&Label::Class("true".into())).as_deref(),
            Some("true")
        );
    }

    /// Regression (issue 41, item 2): labels `"yes"`/`"no"` of a
    /// score-only model without `positive_class` were scored against the
    /// classes `"1"`/`"0"` (positive rate 0, ROC AUC NULL).
    #[test]
    fn labels_of_other_class_names_are_refused_or_learnt() {
        let mut m = Metrics::default();
        let task = Task::binary();
        assert_eq!(
            m.add(&task, &scored(0.9), &Label::Class("yes".into())),
            Err(Unscorable::UnknownClass)
        );
        // predictions that say their class and score teach the names
        let mut learnt = Task::binary();
        let said = |class: &str, score: f64| Prediction {
            class: Some(class.into()),
            score: Some(score),
            ..Prediction::default()
        };
        learnt.learn_classes(&said("yes", 0.8));
        learnt.learn_classes(&said("maybe", 0.9));
        learnt.learn_classes(&said("no", 0.2));
        assert_eq!(
            learnt,
            Task::Binary {
                positive: "yes".into(),
                negative: "no".into(),
                threshold: 0.5
            }
        );
        let mut m = Metrics::default();
        for (s, y) in [(0.9, "yes"), (0.8, "no"), (0.3, "yes"), (0.1, "no")] {
            m.add(&learnt, &scored(s), &Label::Class(y.into()))
                .expect("scored");
        }
        let v = m.values(&learnt);
        assert_eq!(get(&v, "positive_rate", None), Some(0.5));
        assert_eq!(get(&v, "roc_auc", None), Some(0.75));
        // classes that spell truth values are not learnt as names
        let mut plain = Task::binary();
        plain.learn_classes(&said("1", 0.9));
        plain.learn_classes(&said("false", 0.1));
        assert_eq!(plain, Task::binary());
    }

    /// Issue 41, S5: 8,000 distinct classes and their labels in one post
    /// made a window's confusion counts 8,000 × 8,000 (2.59 GB resident,
    /// a 257 MB checkpoint). Classes past the bound count as one.
    #[test]
    fn classes_past_the_bound_are_counted_as_other() {
        let task = Task::Multiclass;
        let mut m = Metrics::default();
        let said = |c: &str| Outcome {
            class: Some(c.into()),
            ..Outcome::default()
        };
        for i in 0..8_000 {
            let class = format!("c{i}");
            m.add(&task, &said(&class), &Label::Class(class.clone()))
                .expect("scored");
        }
        // two different classes past the bound are no right prediction
        m.add(&task, &said("c9001"), &Label::Class("c9002".into()))
            .expect("scored");
        assert_eq!(m.classification.classes.len(), MAX_CLASSES + 2);
        assert_eq!(m.classification.confusion.len(), MAX_CLASSES + 2);
        let v = m.values(&task);
        assert_eq!(get(&v, "accuracy", None), Some(8_000.0 / 8_001.0));
        let other = v
            .iter()
            .find(|x| {
                x.metric == "confusion"
                    && x.class.as_deref() == Some(OTHER_CLASS)
                    && x.predicted.as_deref() == Some(OTHER_CLASS)
            })
            .and_then(|x| x.value);
        assert_eq!(other, Some((8_000 - MAX_CLASSES) as f64));
        // merging two windows keeps the bound, and the right predictions
        let mut a = m.clone();
        a.merge(m);
        assert_eq!(a.classification.classes.len(), MAX_CLASSES + 2);
        let v = a.values(&task);
        assert_eq!(get(&v, "accuracy", None), Some(8_000.0 / 8_001.0));
        let mut late = Metrics::default();
        for (t, p) in [("x", "y"), ("z", "z")] {
            late.add(&task, &said(p), &Label::Class(t.into()))
                .expect("scored");
        }
        let mut full = a.clone();
        full.merge(late);
        let v = full.values(&task);
        assert_eq!(get(&v, "accuracy", None), Some(16_001.0 / 16_004.0));
        let bytes = serde_json::to_vec(&a).expect("json").len();
        assert!(bytes < 1 << 20, "{bytes} bytes");
    }
}
