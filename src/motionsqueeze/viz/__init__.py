"""Pictures of what MotionSqueeze computes: flow colour coding, motion grids and animations,
and a parameter-free block-matching estimator built from the same operator.

``motion_fields(video)`` returns the displacement fields as arrays (``.save(path)`` draws
them); ``motionsqueeze visualize`` is the command-line front end. See docs/visualization.md.
"""

from .animate import render_motion_frames, save_motion_animation, write_animation
from .estimator import BlockMatching, block_matching_features, block_matching_flow
from .fields import MotionFields, motion_fields
from .flow_colors import color_wheel, confidence_to_color, flow_to_color, wheel_legend
from .motion_grid import GridStyle, field_to_pixels, motion_scale, render_motion_grid, save_motion_grid

__all__ = [
    "motion_fields",
    "MotionFields",
    "BlockMatching",
    "block_matching_features",
    "block_matching_flow",
    "GridStyle",
    "field_to_pixels",
    "motion_scale",
    "render_motion_grid",
    "save_motion_grid",
    "render_motion_frames",
    "save_motion_animation",
    "write_animation",
    "color_wheel",
    "confidence_to_color",
    "flow_to_color",
    "wheel_legend",
]
