"""Built-in cross-checks (:class:`xbench.VerificationSpec`) of the methods and metrics against
independent implementations, one module per family: ``xbench verify`` runs them, the leaderboard
shows their verdicts, and ``tests/test_verification.py`` runs every one of them.

The references (Quantus, pytorch-grad-cam, torchcam, scikit-learn) are imported inside each check,
so that a missing one skips its checks and nothing else (``pip install "xbench[verify]"``).
"""
