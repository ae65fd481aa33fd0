//! The serving layer's OpenAPI document (`GET /openapi.json`): the routes' descriptions live on the handlers, the
//! answers' shapes here. The schemathesis test in `tests/openapi.rs` checks every answer against them.

use std::collections::BTreeMap;

use lambda_http::api::{ErrorBody, EventSchema, EventsSchema, Live, PredictSchema, RecordSchema};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

/// One model of a prediction's answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Component {
    /// `batch`, `speed` or an online learner's name.
    pub name: String,
    /// Its model family.
    pub family: String,
    /// The batch version it is built on.
    pub version: String,
    /// Its weight in this answer (0 to 1).
    pub weight: f64,
    /// Its loss over the latest labelled events, as the blend last measured it.
    pub window_loss: Option<f64>,
    /// Events it learned online (none for the batch model).
    pub learned: Option<u64>,
}

/// One prediction: a value (regression) or a label with each class' probability (classification).
#[derive(Debug, serde::Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PredictionDoc {
    /// Regression.
    Value {
        /// The predicted value (null if no finite value could be computed).
        #[schema(required = true)]
        value: Option<f64>,
    },
    /// Classification.
    Class {
        /// The most probable class.
        label: Option<String>,
        /// Each class' probability.
        probabilities: BTreeMap<String, f64>,
    },
}

/// `POST /v1/predict`'s answer: `prediction` for one record, `predictions` for an array.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct PredictResponse {
    /// `blend`, or the one model that answered.
    pub model: String,
    /// The batch version answered with.
    pub model_version: String,
    /// The answering model's family (`blend` for the blend).
    pub model_family: String,
    /// Online updates of the linear speed model, when it took part.
    pub speed_update: Option<u64>,
    /// The ingestion sequence number through which the answer is exact.
    pub speed_seq: u64,
    /// Every model of the answer with its weight.
    pub components: Vec<Component>,
    /// The prediction, when one record was sent.
    pub prediction: Option<PredictionDoc>,
    /// One prediction per record, when an array was sent.
    pub predictions: Option<Vec<PredictionDoc>>,
}

/// `GET /health/ready`'s answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Ready {
    /// `ready`, or `degraded` while a drift detector or a bad-data freeze raises an alert (still answering).
    pub status: String,
    /// The batch version served.
    pub model_version: String,
    /// The ingestion sequence number the served state has applied.
    pub speed_seq: u64,
    /// Why it is degraded.
    pub alerts: Vec<String>,
}

/// `GET /v1/views/{key}`'s answer: the key's batch view merged with its realtime view.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct View {
    /// The key.
    pub key: String,
    /// Events of the key.
    pub count: u64,
    /// Per feature: count, mean, min, max (numeric) or value counts (categorical, boolean).
    #[schema(value_type = Object)]
    pub features: Value,
    /// Time of the key's first event (epoch milliseconds).
    pub first_seen: Option<i64>,
    /// Time of its last event.
    pub last_seen: Option<i64>,
    /// Ingestion sequence number of its last event.
    pub last_seq: u64,
    /// Label counts (classification).
    #[schema(value_type = Option<Object>)]
    pub labels: Option<Value>,
    /// Label statistics (regression).
    #[schema(value_type = Option<Object>)]
    pub target: Option<Value>,
    /// The batch view's watermark.
    pub watermark: u64,
    /// The batch version of the view.
    pub batch_version: String,
    /// The ingestion sequence number through which the answer is exact.
    pub speed_seq: u64,
    /// Events of the key after the watermark.
    pub realtime_count: u64,
}

/// One published version.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct VersionSummary {
    /// Its name.
    pub version: String,
    /// When it was published (RFC 3339).
    pub created: String,
    /// The ingestion sequence number its training data ends at.
    pub watermark: u64,
    /// Its holdout metrics.
    #[schema(value_type = Object)]
    pub metrics: Value,
}

/// `GET /v1/models`' answer.
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct Models {
    /// The version served.
    pub current: Option<String>,
    /// The registry's current version (ahead of `current` until the speed layer adopts it).
    pub registry_current: Option<String>,
    /// The served version's manifest: its metrics, leaderboard, gate and search.
    #[schema(value_type = Option<Object>)]
    pub manifest: Option<Value>,
    /// The ingestion sequence number the served state has applied.
    pub speed_seq: Option<u64>,
    /// Every published version.
    pub versions: Vec<VersionSummary>,
    /// The speed layer: counters, online learners, windowed metrics and drift detectors, the blend, a freeze and
    /// the retraining on the fly.
    #[schema(value_type = Option<Object>)]
    pub speed: Option<Value>,
}

/// Open Inference Protocol documents.
pub mod v2 {
    use super::*;

    /// `GET /v2`.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct ServerMetadata {
        /// `lambda-ml`.
        pub name: String,
        /// Its version.
        pub version: String,
        /// Protocol extensions (none).
        pub extensions: Vec<String>,
    }

    /// `GET /v2/health/live`.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct ServerLive {
        /// Always true.
        pub live: bool,
    }

    /// `GET /v2/health/ready`.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct ServerReady {
        /// True once a model is loaded.
        pub ready: bool,
    }

    /// `GET /v2/models/{name}/ready`.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct ModelReady {
        /// The model.
        pub name: String,
        /// True.
        pub ready: bool,
    }

    /// A tensor's name, type and shape.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct TensorMetadata {
        /// A feature's name, or an output's.
        pub name: String,
        /// `FP64`, `BYTES` or `BOOL`.
        pub datatype: String,
        /// -1 for the rows.
        pub shape: Vec<i64>,
        /// The classes of `probabilities`.
        #[schema(value_type = Option<Object>)]
        pub parameters: Option<Value>,
    }

    /// `GET /v2/models/{name}`.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct ModelMetadata {
        /// The pipeline's name.
        pub name: String,
        /// The version served.
        pub versions: Vec<String>,
        /// `lambda-ml`.
        pub platform: String,
        /// One per feature.
        pub inputs: Vec<TensorMetadata>,
        /// `label` and `probabilities`, or `value`.
        pub outputs: Vec<TensorMetadata>,
    }

    /// One input tensor: a feature (shape `[N]` or `[N, 1]`), or one tensor of every feature in spec order
    /// (`[N, F]`).
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct RequestInput {
        /// A feature's name (or any name for the one `[N, F]` tensor).
        pub name: String,
        /// Sizes.
        pub shape: Vec<u64>,
        /// The values' type.
        pub datatype: Datatype,
        /// Unused.
        #[schema(value_type = Option<Object>)]
        pub parameters: Option<Value>,
        /// The values, flat or nested, row-major.
        pub data: Vec<Value>,
    }

    /// A tensor's data type.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code, clippy::upper_case_acronyms)]
    pub enum Datatype {
        /// Booleans (or 0/1).
        BOOL,
        /// Strings.
        BYTES,
        /// Numbers.
        FP16,
        /// Numbers.
        FP32,
        /// Numbers.
        FP64,
        /// Integers.
        INT8,
        /// Integers.
        INT16,
        /// Integers.
        INT32,
        /// Integers.
        INT64,
        /// Integers.
        UINT8,
        /// Integers.
        UINT16,
        /// Integers.
        UINT32,
        /// Integers.
        UINT64,
    }

    /// An output asked for by name.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct RequestOutput {
        /// `label`, `probabilities` or `value`.
        pub name: String,
    }

    /// `POST /v2/models/{name}/infer`'s body.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct InferRequest {
        /// Echoed in the answer.
        pub id: Option<String>,
        /// `model` (which model answers, as `?model=` of `/v1/predict`) and `min_seq`.
        #[schema(value_type = Option<Object>)]
        pub parameters: Option<Value>,
        /// The input tensors.
        #[schema(min_items = 1)]
        pub inputs: Vec<RequestInput>,
        /// The outputs wanted (all by default).
        pub outputs: Option<Vec<RequestOutput>>,
    }

    /// One output tensor.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct ResponseOutput {
        /// `label`, `probabilities` or `value`.
        pub name: String,
        /// `BYTES` or `FP64`.
        pub datatype: String,
        /// `[N]`, or `[N, classes]` for `probabilities`.
        pub shape: Vec<u64>,
        /// The classes of `probabilities`.
        #[schema(value_type = Option<Object>)]
        pub parameters: Option<Value>,
        /// The values, row-major.
        pub data: Vec<Value>,
    }

    /// `POST /v2/models/{name}/infer`'s answer.
    #[derive(Debug, ToSchema)]
    #[allow(dead_code)]
    pub struct InferResponse {
        /// The pipeline's name.
        pub model_name: String,
        /// The batch version answered with.
        pub model_version: String,
        /// The request's id.
        pub id: Option<String>,
        /// `model` (what answered) and `speed_seq`.
        #[schema(value_type = Object)]
        pub parameters: Value,
        /// The outputs.
        pub outputs: Vec<ResponseOutput>,
    }
}

/// The serving layer's routes.
#[derive(OpenApi)]
#[openapi(
    paths(
        crate::predict,
        crate::view,
        crate::models,
        lambda_http::api::live,
        crate::ready,
        lambda_http::api::metrics,
        lambda_http::api::openapi_json,
        crate::v2::server,
        crate::v2::server_live,
        crate::v2::server_ready,
        crate::v2::model_metadata,
        crate::v2::version_metadata,
        crate::v2::model_ready_route,
        crate::v2::version_ready,
        crate::v2::model_infer,
        crate::v2::version_infer,
    ),
    components(schemas(ErrorBody, Live, EventSchema, EventsSchema, RecordSchema, PredictSchema)),
    info(description = "Predictions, per-key views and models of one pipeline (`/v1`), the Open Inference Protocol \
        (`/v2`), health and Prometheus metrics. Every error answers `{\"error\": \"...\"}`.")
)]
pub struct ServingApi;
