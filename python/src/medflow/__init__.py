"""medflow: published medical-image-analysis methods as small command-line tools."""

__version__ = "0.1.0"
