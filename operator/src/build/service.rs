//! The Service in front of the agent pods.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{PORT_NAME, Validated, child_meta};
use crate::labels::selector_labels;

/// The Service: `spec.service.type` (ClusterIP by default), port `http` (`spec.service.port`,
/// else `spec.port`) to the container port named `http`.
pub fn build_service(v: &Validated<'_>) -> Service {
    let spec = &v.fa().spec;
    let mut metadata = child_meta(v, spec.service.labels.as_ref());
    metadata.annotations = spec.service.annotations.clone();
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.service.type_.as_str().to_string()),
            selector: Some(selector_labels(v.name())),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: v.service_port(),
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}
