"""Conformance tier: code nobody here wrote (pymilter's own tests and sample
milters, dkimpy-milter, spf-engine) run on ``Milter`` instead of pymilter."""
