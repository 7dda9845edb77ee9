"""Pictures of what MotionSqueeze computes: flow colour coding and motion grids."""

from .flow_colors import color_wheel, flow_to_color, wheel_legend

__all__ = ["color_wheel", "flow_to_color", "wheel_legend"]
