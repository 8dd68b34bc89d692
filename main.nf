#!/usr/bin/env nextflow
/*
 * medflow: cohort pipeline (scale-out runner). The stage list lives in Python
 * (medflow.pipeline); this workflow mirrors it. Until the Nextflow issue lands it runs
 * the one finished per-subject stage, preprocess.
 */
nextflow.enable.dsl = 2

include { PREPROCESS } from './modules/local/preprocess/main'

workflow {
    if (!params.input) { error "Please give --input samplesheet.csv" }

    // One channel item per (subject, role) image named in the samplesheet
    ch_images = Channel
        .fromPath(params.input, checkIfExists: true)
        .splitCsv(header: true)
        .flatMap { row ->
            row.findAll { role, path -> role != 'subject' && path && !path.endsWith('.json') }
               .collect { role, path -> [[id: row.subject, role: role], file(path, checkIfExists: true)] }
        }

    // Reorient, resample, normalise
    PREPROCESS(ch_images)
}
