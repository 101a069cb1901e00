//! The FastAgentic custom resource.
