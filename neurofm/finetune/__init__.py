"""Finetuning: heads and training modes (:mod:`~neurofm.finetune.classifier`), evaluation protocols
(LOSO, k-fold, few-shot), the in-process evaluation (:mod:`~neurofm.finetune.evaluate`) and the
tasks of ``neurofm finetune`` (:func:`neurofm.finetune.tasks.finetune`)."""
