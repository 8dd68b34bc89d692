"""`medflow samplesheet`: write a samplesheet for raw downloads (UK Biobank zips)."""
