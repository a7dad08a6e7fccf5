"""The statistics of `tgbench fit`: scaling-law fits, multipliers, and the verdict of every pair (fits.json).

    laws.py         the fit forms (Kaplan, saturating; FitForm, register_form), their fitters, the joint
                    L(N, D) fit, and a fitted law (PowerLawFit)
    bootstrap.py    intervals of fitted laws: seed resampling within cells, t intervals, multiplier bands
    multipliers.py  multipliers at measured points (interpolated, Kaplan) with analytic intervals; lack of fit
    paired.py       the paired differences of two models and their tests: per budget, pooled, trend
    power.py        prospective power: the smallest differences a design shows, the replicates it needs
    verdicts.py     is A better than B: the class, its sentence and details, influential pairs
    fits.py         fit_grid / write_fits: all of the above over a results table -> fits.json
"""
