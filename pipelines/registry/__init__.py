"""The registry stage: model versions and their tags, the promotion rule and gate, rollback, folder export."""
