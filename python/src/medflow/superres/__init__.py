"""super-resolve: thick-slice cardiac stacks to high-resolution 3D shapes (and images)."""
