//! Reads the Secrets a FastAgentic references: checks they (and their keys) exist and returns
//! their resourceVersions for the pod-template hash. The values are never copied anywhere.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use super::Error;
use crate::build::SecretUse;

/// resourceVersion of every referenced Secret that exists, by name; an error naming the field
/// for the first required Secret or key that is missing.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    uses: &[SecretUse],
) -> Result<BTreeMap<String, String>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut versions = BTreeMap::new();
    let mut fetched: BTreeMap<&str, Option<Secret>> = BTreeMap::new();
    for u in uses {
        if !fetched.contains_key(u.name.as_str()) {
            let secret = api
                .get_opt(&u.name)
                .await
                .map_err(Error::kube(format!("get Secret {namespace}/{}", u.name)))?;
            fetched.insert(u.name.as_str(), secret);
        }
        match fetched.get(u.name.as_str()).and_then(Option::as_ref) {
            None if u.required => {
                return Err(Error::SecretNotFound {
                    field: u.field.clone(),
                    name: u.name.clone(),
                    namespace: namespace.to_string(),
                });
            }
            None => {}
            Some(secret) => {
                if let Some(key) = &u.key
                    && u.required
                    && !has_key(secret, key)
                {
                    return Err(Error::SecretKeyNotFound {
                        field: u.field.clone(),
                        name: u.name.clone(),
                        key: key.clone(),
                    });
                }
                if let Some(rv) = &secret.metadata.resource_version {
                    versions.insert(u.name.clone(), rv.clone());
                }
            }
        }
    }
    Ok(versions)
}

fn has_key(secret: &Secret, key: &str) -> bool {
    secret.data.as_ref().is_some_and(|d| d.contains_key(key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(key))
}
