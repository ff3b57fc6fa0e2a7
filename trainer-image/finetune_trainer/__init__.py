"""The trainer that runs inside a FineTuneJob's pods. Importing this package never imports torch."""
