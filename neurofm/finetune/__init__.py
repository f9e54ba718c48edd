"""Finetuning: heads, evaluation protocols (LOSO, k-fold, few-shot) and the finetuning run (:func:`neurofm.finetune.train.finetune`)."""
