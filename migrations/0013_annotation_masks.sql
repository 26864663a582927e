-- A COCO annotation's `segmentation` (polygons or RLE) as imported, drawn on the dataset page
-- and the predictions browser. Datasets imported before this, and VOC ones, have none.

ALTER TABLE annotations ADD COLUMN segmentation JSONB;
