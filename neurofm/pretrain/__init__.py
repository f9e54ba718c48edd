"""Pretraining: LightningModule, shard DataModule and the Hydra entry point."""
