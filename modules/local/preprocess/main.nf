process PREPROCESS {
    tag "${meta.id}:${meta.role}"
    label 'process_low'
    container "medflow:${workflow.manifest.version}"

    input:
    tuple val(meta), path(image)

    output:
    tuple val(meta), path("${prefix}_${meta.role}_preproc.nii.gz"), emit: image
    tuple val(meta), path("${prefix}_${meta.role}_preproc.json"),   emit: sidecar
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix = task.ext.prefix ?: "${meta.id}"
    // Same rule as medflow.io.samplesheet.is_label_role: seg*/mask*/label* columns are labels
    def role = meta.role.toLowerCase() ==~ /^(seg|mask|label).*/ ? 'label' : 'image'
    """
    medflow preprocess --input ${image} --output ${prefix}_${meta.role}_preproc.nii.gz --role ${role} ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo | gzip > ${prefix}_${meta.role}_preproc.nii.gz
    echo '{}' > ${prefix}_${meta.role}_preproc.json
    """
}
