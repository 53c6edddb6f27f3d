"""Person re-identification: faces found in a frame, embedded, matched against a gallery."""
