"""Finetuning: heads, evaluation protocols (LOSO, k-fold, few-shot) and the finetune entry point."""
