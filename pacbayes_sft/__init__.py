"""pacbayes_sft: PAC-Bayes bound terms from LoRA fine-tuning runs, and the best SFT data difficulty per budget."""

__version__ = "0.1.0"
