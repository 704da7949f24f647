"""Kaggle: the CLI wrapper (download, publish, wheelhouse, submit) and where a notebook runs.

Modules:
  client        the official `kaggle` command-line tool as a child process, credentials, submit
  wheels        the landmarks wheel (built, or published alone) and a wheelhouse of the
                requirements for Kaggle's Python
  install       the notebooks' install step: missing requirements only, the image's kept
  environment   Kaggle / Colab / local, TPU / GPU / CPU, attached-dataset paths

The `kaggle` Python package itself is never imported here (it exits the interpreter when it
finds no credentials).
"""
