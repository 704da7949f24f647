"""Kaggle: the CLI wrapper (download, publish, wheelhouse, submit) and where a notebook runs.

Modules:
  client        the official `kaggle` command-line tool as a child process, credentials, wheels
  environment   Kaggle / Colab / local, TPU / GPU / CPU, attached-dataset paths

The `kaggle` Python package itself is never imported here (it exits the interpreter when it
finds no credentials).
"""
