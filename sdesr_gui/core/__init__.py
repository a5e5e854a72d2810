"""Qt-free core of SDE-SR Studio: models, sampling, faces, metrics, provenance."""
