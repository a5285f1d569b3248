"""Talking to Huawei Cloud DLI: the AK/SK request signer (pure functions) and the HTTP client built on it."""
