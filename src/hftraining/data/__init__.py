"""Data layer: read → validate → features → split → scale → windows. Never imports models/."""
