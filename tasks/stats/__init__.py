"""The statistics of `tgbench fit`: scaling-law fits, multipliers, and the verdict of every pair (fits.json).

    laws.py         the fit forms (Kaplan, saturating; FitForm, register_form), their fitters, the joint
                    L(N, D) fit, and a fitted law (PowerLawFit)
    bootstrap.py    intervals of fitted laws: seed resampling within cells, t intervals, multiplier bands
    multipliers.py  multipliers at measured points (interpolated, Kaplan) with analytic intervals; lack of fit
    verdicts.py     is A better than B: paired tests per budget, pooled, trend; the class; power
    fits.py         fit_grid / write_fits: all of the above over a results table -> fits.json
"""
