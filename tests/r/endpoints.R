# The R references for skintrack's endpoint models. Usage: Rscript endpoints.R KIND DATA.csv OUT.csv
# DATA has arm (control first in DATA.arms), base, value; KIND is one of:
#   nb        MASS::glm.nb(value ~ arm + log(base + 1)): coefficient, SE (Wald), theta
#   poisson   glm(value ~ arm + log(base + 1), poisson)
#   polr      MASS::polr(factor(value) ~ arm + base, Hess = TRUE): coefficient, SE
#   logistic  glm(value ~ arm + base, binomial)
#   firth     brglm2's Firth bias reduction of the same model (glm(..., method = "brglmFit", type = "AS_mean"))
#   hl        wilcox.test(value[treatment], value[control], conf.int = TRUE): estimate, CI
#   g         Hedges' g: d * J with the noncentral-t interval by uniroot on pt(ncp)
suppressMessages(library(MASS))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[2], stringsAsFactors = FALSE)
arms <- readLines(paste0(args[2], ".arms"))
d$arm <- factor(d$arm, levels = arms)
out <- switch(args[1],
  nb = { f <- glm.nb(value ~ arm + log(base + 1), data = d, control = glm.control(epsilon = 1e-12, maxit = 200))
         s <- summary(f)$coefficients; data.frame(b = s[2, 1], se = s[2, 2], theta = f$theta) },
  poisson = { f <- glm(value ~ arm + log(base + 1), data = d, family = poisson, control = glm.control(epsilon = 1e-12))
              s <- summary(f)$coefficients; data.frame(b = s[2, 1], se = s[2, 2], theta = Inf) },
  polr = { f <- polr(factor(value) ~ arm + base, data = d, Hess = TRUE, control = list(reltol = 1e-14))
           s <- summary(f)$coefficients; data.frame(b = s[1, 1], se = s[1, 2], theta = NA) },
  logistic = { f <- glm(value ~ arm + base, data = d, family = binomial, control = glm.control(epsilon = 1e-12))
               s <- summary(f)$coefficients; data.frame(b = s[2, 1], se = s[2, 2], theta = NA) },
  firth = { suppressMessages(library(brglm2))
            f <- glm(value ~ arm + base, data = d, family = binomial, method = "brglmFit", type = "AS_mean",
                     control = brglmControl(epsilon = 1e-12, maxit = 500))
            s <- summary(f)$coefficients; data.frame(b = s[2, 1], se = s[2, 2], theta = NA) },
  hl = { w <- suppressWarnings(wilcox.test(d$value[d$arm == arms[2]], d$value[d$arm == arms[1]], conf.int = TRUE))
         data.frame(b = unname(w$estimate), lo = w$conf.int[1], hi = w$conf.int[2]) },
  g = { a <- d$value[d$arm == arms[2]]; b <- d$value[d$arm == arms[1]]; na <- length(a); nb <- length(b)
        df <- na + nb - 2; sp <- sqrt(((na - 1) * var(a) + (nb - 1) * var(b)) / df); dd <- (mean(a) - mean(b)) / sp
        J <- exp(lgamma(df / 2) - log(sqrt(df / 2)) - lgamma((df - 1) / 2)); sc <- sqrt(na * nb / (na + nb)); t <- dd * sc
        ncp <- function(p) uniroot(function(x) pt(t, df, x) - p, c(t - 50, t + 50), tol = 1e-12)$root
        data.frame(b = dd * J, lo = ncp(0.975) / sc * J, hi = ncp(0.025) / sc * J) })
write.csv(out, args[3], row.names = FALSE)
