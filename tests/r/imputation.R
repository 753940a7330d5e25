# References for skintrack's multiple imputation (tests/test_sensitivity.py). Usage:
#   Rscript imputation.R pool  DIR   completed data sets DIR/completed-*.csv (subject, arm, base, chg; the first
#                                    arm level in DIR/arms is the control): lm(chg ~ arm + base) on each, pooled by
#                                    mice::pool (Rubin's rules, Barnard-Rubin df)      -> DIR/pooled.csv
#   Rscript imputation.R mice  DIR   DIR/wide.csv (subject, arm, base, one column per visit, NA when missing):
#                                    mice(method = "norm") under MAR, m and seed from DIR/settings.csv, the last
#                                    visit analysed by lm(chg ~ arm + base), pooled       -> DIR/mice.csv
#   Rscript imputation.R means DIR   the conditional means of the missing values under MAR, J2R and CR (rbmi's
#                                    definitions, written here from Carpenter, Roger & Kenward 2013, section 3):
#                                    DIR/wide.csv, DIR/own.csv, DIR/ref.csv (fitted means by the subject's arm and by
#                                    the control), DIR/sigma.csv, DIR/treated.csv          -> DIR/means-METHOD.csv
suppressMessages(library(mice))
args <- commandArgs(trailingOnly = TRUE)
dir <- args[2]
arms <- readLines(file.path(dir, "arms"))
if (args[1] == "pool") {
  files <- sort(Sys.glob(file.path(dir, "completed-*.csv")))
  fits <- lapply(files, function(f) { d <- read.csv(f); d$arm <- factor(d$arm, levels = arms); lm(chg ~ arm + base, d) })
  s <- summary(pool(as.mira(fits)))
  s <- s[grepl("^arm", s$term), ]
  write.csv(data.frame(treatment = sub("^arm", "", s$term), estimate = s$estimate, se = s$std.error, df = s$df,
                       p = s$p.value), file.path(dir, "pooled.csv"), row.names = FALSE)
} else if (args[1] == "mice") {
  w <- read.csv(file.path(dir, "wide.csv"), check.names = FALSE)
  settings <- read.csv(file.path(dir, "settings.csv"))
  w$arm <- factor(w$arm, levels = arms)
  visits <- setdiff(names(w), c("subject", "arm", "base"))
  data <- w[, c("arm", "base", visits)]
  names(data) <- c("arm", "base", paste0("v", seq_along(visits)))
  imp <- mice(data, method = ifelse(colSums(is.na(data)) > 0, "norm", ""), m = settings$m, seed = settings$seed,
              printFlag = FALSE, maxit = 20)
  last <- paste0("v", length(visits))
  s <- summary(pool(with(imp, lm(as.formula(paste(last, "~ arm + base"))))))
  s <- s[grepl("^arm", s$term), ]
  write.csv(data.frame(treatment = sub("^arm", "", s$term), estimate = s$estimate, se = s$std.error, df = s$df),
            file.path(dir, "mice.csv"), row.names = FALSE)
} else if (args[1] == "means") {
  y <- as.matrix(read.csv(file.path(dir, "wide.csv")))
  own <- as.matrix(read.csv(file.path(dir, "own.csv"))); ref <- as.matrix(read.csv(file.path(dir, "ref.csv")))
  S <- as.matrix(read.csv(file.path(dir, "sigma.csv"))); treated <- read.csv(file.path(dir, "treated.csv"))$treated
  nv <- ncol(y)
  for (method in c("mar", "j2r", "cr")) {
    out <- y
    for (i in seq_len(nrow(y))) {
      o <- !is.na(y[i, ]); m <- is.na(y[i, ])
      if (!any(m)) next
      last <- if (any(o)) max(which(o)) else 0
      mu <- own[i, ]  # MAR: the subject's own arm
      if (treated[i] == 1 && method == "j2r") mu[seq_len(nv) > last] <- ref[i, seq_len(nv) > last]
      if (treated[i] == 1 && method == "cr" && last < nv) mu <- ref[i, ]
      out[i, m] <- if (any(o)) mu[m] + S[m, o, drop = FALSE] %*% solve(S[o, o, drop = FALSE], y[i, o] - mu[o]) else mu[m]
    }
    write.csv(out, file.path(dir, paste0("means-", method, ".csv")), row.names = FALSE)
  }
}
