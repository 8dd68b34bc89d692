// medflow segment-cascaded predict: segment one subject's image (several channels in the
// model's order when the model has several) with a trained cascade, and write a voxel-wise
// uncertainty map beside the labels; with save_probabilities (--save_probabilities) also
// the class probabilities (X,Y,Z[,T],C float32, about ten times the image's size). Runs
// on a GPU when one is allocated (task.accelerator) and on CPU otherwise.
process SEGMENT_CASCADED_PREDICT {
    tag "${meta.id}:${meta.role}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(image)
    path(model)
    val(save_probabilities)

    output:
    tuple val(meta), path("${prefix}_${meta.role}_seg.nii.gz"),  emit: seg
    tuple val(meta), path("${prefix}_${meta.role}_unc.nii.gz"),  emit: uncertainty
    tuple val(meta), path("${prefix}_${meta.role}_seg.json"),    emit: sidecar
    tuple val(meta), path("${prefix}_${meta.role}_prob.nii.gz"), emit: prob, optional: true
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def device = task.accelerator ? 'cuda' : 'cpu'
    def inputs = (image instanceof List ? image : [image]).collect { f -> "--input ${f}" }.join(' ')
    prefix     = task.ext.prefix ?: "${meta.id}"
    def probabilities = save_probabilities ? "--probabilities ${prefix}_${meta.role}_prob.nii.gz" : ''
    """
    medflow segment-cascaded predict \\
        --model ${model} \\
        ${inputs} \\
        --output ${prefix}_${meta.role}_seg.nii.gz \\
        --uncertainty ${prefix}_${meta.role}_unc.nii.gz \\
        ${probabilities} \\
        --device ${device} \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo | gzip > ${prefix}_${meta.role}_seg.nii.gz
    echo | gzip > ${prefix}_${meta.role}_unc.nii.gz
    echo '{}' > ${prefix}_${meta.role}_seg.json
    ${save_probabilities ? "echo | gzip > ${prefix}_${meta.role}_prob.nii.gz" : ''}
    """
}
