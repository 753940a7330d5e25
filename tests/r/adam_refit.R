# The primary analysis refitted from the ADaM dataset alone: ADSKIN's ANL01FL = "Y" records of one PARAMCD,
# CHG ~ BASE + TRTP * AVISIT, unstructured covariance, REML, Kenward-Roger (tests/r/structures.R).
# Usage: Rscript adam_refit.R ADSKIN.csv PARAMCD OUT_PREFIX  -> OUT_PREFIX-kr.csv (visit, treatment, estimate, se, df)
args <- commandArgs(trailingOnly = TRUE)
a <- read.csv(args[1], stringsAsFactors = FALSE, na.strings = "")
a <- a[a$PARAMCD == args[2] & !is.na(a$ANL01FL) & a$ANL01FL == "Y", ]
arms <- unique(a$TRTP[order(a$TRTPN)])
visits <- unique(a$AVISIT[order(a$AVISITN)])
d <- data.frame(subject = a$USUBJID, arm = a$TRTP, visit = a$AVISIT, base = a$BASE, chg = a$CHG, day = a$ADY)
dir <- dirname(args[3])
write.csv(d, file.path(dir, "refit.csv"), row.names = FALSE)
writeLines(arms, file.path(dir, "refit.csv.arms"))
writeLines(visits, file.path(dir, "refit.csv.visits"))
d$arm <- factor(d$arm, levels = arms); d$visit <- factor(d$visit, levels = visits)
X <- model.matrix(chg ~ base + arm * visit, d)
rows <- list(); labels <- c()
for (v in visits) for (t in arms[-1]) {  # each treatment minus the control at each visit
  L <- setNames(rep(0, ncol(X)), colnames(X))
  L[paste0("arm", t)] <- 1
  if (v != visits[1]) L[paste0("arm", t, ":visit", v)] <- 1
  rows[[length(rows) + 1]] <- L; labels <- c(labels, paste(v, t))
}
write.csv(do.call(rbind, rows), file.path(dir, "refit.csv.contrasts"), row.names = FALSE)
script <- file.path(dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE))), "structures.R")
status <- system2("Rscript", c(script, file.path(dir, "refit.csv"), "unstructured", paste0(args[3], "-un")))
if (status != 0) stop("structures.R failed")
kr <- read.csv(paste0(args[3], "-un-kr.csv"))
kr$visit <- sub(" .*", "", labels); kr$treatment <- sub("^[^ ]* ", "", labels)
write.csv(kr, paste0(args[3], "-kr.csv"), row.names = FALSE)
