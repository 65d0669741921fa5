"""What tests/ and e2e/ share to run real servers (imported as `tests.support...` from both)."""
