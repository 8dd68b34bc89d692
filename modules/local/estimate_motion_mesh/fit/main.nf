// medflow estimate-motion-mesh fit: a template heart mesh (LV endo- and epicardium, RV
// endocardium) fitted to one subject's predicted short-axis cine segmentation and its
// long-axis segmentations (seg_la_2ch / seg_la_4ch of the samplesheet) and moved
// through the cycle; mesh phenotypes (volumes, LVEF, LV mass, RVEF, strain, wall
// thickness) and QC in <prefix>_<role>_phenotypes.parquet. A per-subject optimisation on
// CPU (--threads from task.cpus); with a model from `estimate-motion-mesh train`
// (--motion_model; [] when none) the same outputs come from `predict`, one network pass
// after the ED fit (~2.5 s CPU a subject), also on CPU: the slicer's cuts are sparse.
process ESTIMATE_MOTION_MESH_FIT {
    tag "${meta.id}:${meta.role}"
    label 'process_medium'

    input:
    tuple val(meta), path(seg), path(long_axis)
    path(model)

    output:
    tuple val(meta), path("${prefix}_${meta.role}_phenotypes.parquet"),   emit: phenotypes
    tuple val(meta), path("${prefix}_${meta.role}_frames.parquet"),       emit: frames
    tuple val(meta), path("${prefix}_${meta.role}_vertices.parquet"),     emit: vertices
    tuple val(meta), path("${prefix}_${meta.role}_displacements.npy"),    emit: displacements
    tuple val(meta), path("${prefix}_${meta.role}_meshes"),               emit: meshes
    tuple val(meta), path("${prefix}_${meta.role}_motion.json"),          emit: sidecar
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    def mode = model ? "predict --model ${model}" : 'fit'
    // one flag per long-axis segmentation, named by its samplesheet column (meta.la_roles)
    def files = long_axis instanceof List ? long_axis : [long_axis]
    def views = [meta.la_roles, files].transpose()
        .collect { role, file -> "--${role.replace('seg_', '').replace('_', '-')} ${file}" }
        .join(' ')
    """
    medflow estimate-motion-mesh ${mode} \\
        --sa ${seg} \\
        ${views} \\
        --out . \\
        --prefix ${prefix}_${meta.role} \\
        --threads ${task.cpus} \\
        --device cpu \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}_${meta.role}_phenotypes.parquet
    touch ${prefix}_${meta.role}_frames.parquet
    touch ${prefix}_${meta.role}_vertices.parquet
    touch ${prefix}_${meta.role}_displacements.npy
    mkdir -p ${prefix}_${meta.role}_meshes
    touch ${prefix}_${meta.role}_meshes/frame_000.ply
    echo '{}' > ${prefix}_${meta.role}_motion.json
    """
}
