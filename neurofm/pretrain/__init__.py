"""Pretraining: LightningModule, shard DataModule and the training run (:func:`neurofm.pretrain.train.pretrain`)."""
