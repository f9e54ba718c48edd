"""Model: embeddings, attention backends, masked autoencoder and heads (pretraining issue)."""
