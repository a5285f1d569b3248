"""Credentials that last for months: keys from files re-read when they change (`files`), temporary keys
of an agency from the metadata service (`metadata`), IAM tokens renewed before they expire
(`iam_token`), and named profiles (`spec`, `profiles`).

One `CredentialSource` (`source`) per profile hands the DLI and OBS clients the keys to sign with now.
Import the modules themselves: this package imports nothing, so that `spec` (pure, read by the settings
and the routes) never pulls in the sources and their I/O.
"""
