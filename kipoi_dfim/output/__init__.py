"""Output formats: one module per format, each holding its columns, writer and reader.

- :mod:`~kipoi_dfim.output.tsv`: the per-(variant, ALT, target) table of ``score-variants --tsv``
- :mod:`~kipoi_dfim.output.vcf`: the annotated VCF (``-o``)
- :mod:`~kipoi_dfim.output.maps`: the HDF5 of FIS tracks (``--maps``)
- :mod:`~kipoi_dfim.output.interactions_tsv`: the table of ``kipoi-dfim interactions``

Every writer implements :class:`~kipoi_dfim.output.base.Writer`; a new format is a new module here plus one
line in :func:`kipoi_dfim.scoring.open_writers`.
"""
