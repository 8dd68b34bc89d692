// medflow preprocess: reorient (and, if ext.args asks, resample, crop, normalise) one image
// or label map of one subject. Labels (meta.kind == 'label', decided by the samplesheet
// check with medflow.io.samplesheet.is_label_role) resample by nearest neighbour and are
// never normalised. A series inside a DICOM zip (meta.series, from a <zip>#<series>
// samplesheet cell) is read as '<zip>#<series>', the syntax medflow reads.
process PREPROCESS {
    tag "${meta.id}:${meta.role}"
    label 'process_low'

    input:
    tuple val(meta), path(image)

    output:
    tuple val(meta), path("${prefix}_${meta.role}_preproc.nii.gz"), emit: image
    tuple val(meta), path("${prefix}_${meta.role}_preproc.json"),   emit: sidecar
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def role   = meta.kind == 'label' ? 'label' : 'image'
    def source = meta.series ? "'${image}#${meta.series}'" : "${image}"
    prefix     = task.ext.prefix ?: "${meta.id}"
    """
    medflow preprocess \\
        --input ${source} \\
        --output ${prefix}_${meta.role}_preproc.nii.gz \\
        --role ${role} \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo | gzip > ${prefix}_${meta.role}_preproc.nii.gz
    echo '{}' > ${prefix}_${meta.role}_preproc.json
    """
}
