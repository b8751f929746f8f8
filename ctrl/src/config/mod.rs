//! Configuration: the node's description (`node.toml`, [`node`]) and the
//! Services and EndpointSlices it serves (Kubernetes manifests, [`k8s`]).
//!
//! Both are parsed and validated completely before anything is compiled; a
//! bad input is a [`ConfigError`] and nothing of it is used.

mod fast;
pub mod k8s;
pub mod node;

pub use k8s::Manifests;
pub use node::NodeConfig;

/// A configuration problem, located precisely enough to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{file}: {error}")]
    Io {
        /// File.
        file: String,
        /// The OS error.
        error: String,
    },
    /// `node.toml` is invalid.
    #[error("{file}: {field}: {problem}")]
    Node {
        /// File.
        file: String,
        /// Field path (or byte span for syntax errors).
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A manifest is not valid YAML.
    #[error("{file}: document {doc}: {error}")]
    Yaml {
        /// File.
        file: String,
        /// 0-based document index.
        doc: usize,
        /// The parser's message.
        error: String,
    },
    /// A manifest field has a value the datapath cannot honour.
    #[error("{file}: document {doc}: {path}: {problem} (got {value})")]
    Manifest {
        /// File.
        file: String,
        /// 0-based document index.
        doc: usize,
        /// Field path inside the document (`items[3].spec.ports[0].protocol`).
        path: String,
        /// The offending value, as YAML.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// Two Services claim the same frontend.
    #[error("{file}: document {doc}: {path}: {problem}")]
    Conflict {
        /// File of the later Service.
        file: String,
        /// Its document.
        doc: usize,
        /// Its field.
        path: String,
        /// The clash.
        problem: String,
    },
}
