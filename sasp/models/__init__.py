"""Models that sasp owns. ``sasp.models.seg_llava``: LISA's architecture on current libraries."""
