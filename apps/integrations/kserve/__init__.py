"""KServe serving backend: InferenceService manifests and the Kubernetes API client."""
