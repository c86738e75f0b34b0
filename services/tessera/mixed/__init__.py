"""The mixed-modal model: one transformer over text and image tokens (edits, captions)."""
