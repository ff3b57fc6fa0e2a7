"""The finetune-operator: turns FineTuneJob resources into trainer Jobs and reports honest status."""
