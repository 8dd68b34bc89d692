// Validate the samplesheet with medflow's own code (medflow.io.samplesheet, the same JSON
// Schema and checks as `medflow pipeline`) before any other task, and turn it into one row
// per (subject, role) with the role's kind (image/label) and, for labels, the image they
// annotate. Errors name the row and the column and exit 65 (bad) or 66 (missing file),
// which are not retried: the run stops before any work.
process SAMPLESHEET_CHECK {
    tag "${meta.id}"
    label 'process_single'

    input:
    tuple val(meta), path(samplesheet)

    output:
    tuple val(meta), path("${prefix}.valid.csv"), emit: csv
    tuple val("${task.process}"), val('medflow'), eval('medflow --version | sed "s/.* //"'), topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    prefix   = task.ext.prefix ?: "${meta.id}"
    // meta.source: where the samplesheet lives (relative image paths resolve against it)
    """
    medflow-samplesheet \\
        --samplesheet ${samplesheet} \\
        --source '${meta.source}' \\
        --out ${prefix}.valid.csv \\
        ${args}
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    echo 'subject,role,kind,pair,path' > ${prefix}.valid.csv
    """
}
