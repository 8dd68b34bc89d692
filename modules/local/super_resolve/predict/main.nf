// medflow super-resolve predict: one subject's short-axis segmentation, ED and ES, to
// 1.25 mm 3D shapes with the per-slice breath-hold shifts corrected (latent optimisation
// with the shape prior); the shifts are in the JSON sidecars. The long-axis segmentations
// of the samplesheet row (seg_la_2ch / seg_la_4ch, meta.la_roles; none is []) make the
// shifts absolute and refine them. Runs on a GPU when one is allocated (task.accelerator)
// and on CPU otherwise.
process SUPER_RESOLVE_PREDICT {
    tag "${meta.id}:${meta.role}"
    label 'process_medium'
    label 'process_gpu'

    input:
    tuple val(meta), path(seg), path(long_axis)
    path(prior)

    output:
    tuple val(meta), path("${prefix}_${meta.role}_hr_ed.nii.gz"),  emit: hr_ed
    tuple val(meta), path("${prefix}_${meta.role}_hr_es.nii.gz"),  emit: hr_es
    tuple val(meta), path("${prefix}_${meta.role}_hr_ed.json"),    emit: sidecar_ed
    tuple val(meta), path("${prefix}_${meta.role}_hr_es.json"),    emit: sidecar_es
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args   = task.ext.args ?: ''
    def device = task.accelerator ? 'cuda' : 'cpu'
    prefix     = task.ext.prefix ?: "${meta.id}"
    // one flag per long-axis segmentation, named by its samplesheet column (meta.la_roles)
    def files  = long_axis instanceof List ? long_axis : [long_axis]
    def views  = [meta.la_roles ?: [], files].transpose()
        .collect { role, file -> "--${role.replace('seg_', '').replace('_', '-')} ${file}" }
        .join(' ')
    """
    medflow super-resolve predict \\
        --model ${prior} \\
        --input ${seg} \\
        ${views} \\
        --output ${prefix}_${meta.role}_hr_{frame}.nii.gz \\
        --device ${device} \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo | gzip > ${prefix}_${meta.role}_hr_ed.nii.gz
    echo | gzip > ${prefix}_${meta.role}_hr_es.nii.gz
    echo '{}' > ${prefix}_${meta.role}_hr_ed.json
    echo '{}' > ${prefix}_${meta.role}_hr_es.json
    """
}
