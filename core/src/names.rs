//! The names the spec refers to: the metrics, the online learners and the blend's components. They live apart from
//! the code that computes them so that the spec can check a name without depending on the models.

/// Metric name to value.
pub type Metrics = std::collections::BTreeMap<String, f64>;

/// The holdout metric that ranks candidates and judges a challenger against the champion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean log loss (classification; lower is better).
    LogLoss,
    /// Share of rows whose most probable class is right (classification).
    Accuracy,
    /// Area under the ROC curve, one-vs-rest mean for more than two classes (classification).
    Auc,
    /// Root mean squared error (regression; lower is better).
    Rmse,
    /// Mean absolute error (regression; lower is better).
    Mae,
    /// Coefficient of determination (regression).
    R2,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 6] =
        [Metric::LogLoss, Metric::Accuracy, Metric::Auc, Metric::Rmse, Metric::Mae, Metric::R2];

    /// Its name in [`Metrics`] and in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Metric::LogLoss => "log_loss",
            Metric::Accuracy => "accuracy",
            Metric::Auc => "auc",
            Metric::Rmse => "rmse",
            Metric::Mae => "mae",
            Metric::R2 => "r2",
        }
    }

    /// Whether it measures a classifier (else a regressor).
    pub fn is_classification(self) -> bool {
        matches!(self, Metric::LogLoss | Metric::Accuracy | Metric::Auc)
    }

    /// Whether smaller values are better.
    pub fn lower_is_better(self) -> bool {
        matches!(self, Metric::LogLoss | Metric::Rmse | Metric::Mae)
    }

    /// How much better `to` is than `from` (positive when better, in the metric's units).
    pub fn gain(self, from: f64, to: f64) -> f64 {
        if self.lower_is_better() {
            from - to
        } else {
            to - from
        }
    }

    /// A sort key: smaller is better; a missing or non-finite value sorts last.
    pub fn rank(self, metrics: &Metrics) -> f64 {
        match metrics.get(self.name()) {
            Some(v) if v.is_finite() => {
                if self.lower_is_better() {
                    *v
                } else {
                    -*v
                }
            }
            _ => f64::INFINITY,
        }
    }
}

/// The batch champion's name among the components.
pub const BATCH: &str = "batch";
/// The speed layer's linear model's name.
pub const SPEED: &str = "speed";
/// The blend's own name (for pinning and status).
pub const BLEND: &str = "blend";

/// The names `speed.learners` accepts.
pub const LEARNERS: [&str; 5] =
    ["hoeffding_tree", "hoeffding_adaptive_tree", "naive_bayes", "adaptive_random_forest", "tracking_linear"];
/// The learners of [`LEARNERS`] that classify only.
pub const CLASSIFIERS_ONLY: [&str; 1] = ["naive_bayes"];
