"""Static checks of the Nextflow side (Nextflow itself cannot be installed here)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # nfsource, the Nextflow source readers
