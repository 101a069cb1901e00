//! Only the leader has the samples, so only the leader is behind the metrics API's Service: the
//! Service has no selector, and the leader writes its one EndpointSlice with its own address
//! (as the API server does for the `kubernetes` Service). A new leader overwrites it; the
//! aggregator's requests never reach a standby.

use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};

use crate::FIELD_MANAGER;
use crate::labels::{LABEL_MANAGED_BY, MANAGED_BY};

/// Port name of the metrics API's Service and EndpointSlice.
pub const PORT_NAME: &str = "https";

/// The EndpointSlice for Service `service` pointing at `address:port`.
pub fn endpoint_slice(service: &str, namespace: &str, address: IpAddr, port: u16) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(service.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(
                [
                    ("kubernetes.io/service-name", service),
                    ("endpointslice.kubernetes.io/managed-by", MANAGED_BY),
                    (LABEL_MANAGED_BY, MANAGED_BY),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
            ..Default::default()
        },
        address_type: if address.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some(PORT_NAME.into()),
            port: Some(i32::from(port)),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    }
}

/// Points the Service at this process (server-side apply, forced: the previous leader's
/// address is replaced).
pub async fn publish(
    client: &kube::Client,
    service: &str,
    namespace: &str,
    address: IpAddr,
    port: u16,
) -> Result<(), kube::Error> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let mut slice = endpoint_slice(service, namespace, address, port);
    slice.metadata.managed_fields = None;
    let mut value = serde_json::to_value(&slice).map_err(kube::Error::SerdeError)?;
    value["apiVersion"] = "discovery.k8s.io/v1".into();
    value["kind"] = "EndpointSlice".into();
    api.patch(
        service,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_belongs_to_the_service_and_names_the_port() {
        let s = endpoint_slice("m", "ops", "10.244.0.7".parse().expect("ip"), 6443);
        let labels = s.metadata.labels.expect("labels");
        assert_eq!(
            labels.get("kubernetes.io/service-name").map(String::as_str),
            Some("m")
        );
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.endpoints[0].addresses, ["10.244.0.7"]);
        let port = &s.ports.expect("ports")[0];
        assert_eq!(
            (port.name.as_deref(), port.port),
            (Some(PORT_NAME), Some(6443))
        );
        let v6 = endpoint_slice("m", "ops", "fd00::1".parse().expect("ip"), 6443);
        assert_eq!(v6.address_type, "IPv6");
    }
}
